"""The memory bank: a fixed-capacity pytree of past frames' memories, and the policy that picks
which of them a frame attends to.

A bank holds, per object (leading axis) and per slot, one frame's spatial memory (the memory
encoder's output), its object pointer, its frame index, whether it is a prompted
("conditioning") frame and when it was prompted, and whether the slot is in use. Shapes never
change as it fills, so a jit-compiled step that takes and returns a bank compiles once.

Two ways of addressing slots cover the two uses:
- offline (a whole video, like the official predictor): one slot per frame, slot == frame index;
- streaming: a ring of recent frames plus room for prompted frames (`streaming_slot`).
The selection policy looks entries up by frame index, so it works the same on both.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config


@flax.struct.dataclass
class MemoryBank:
    maskmem: jax.Array     # [O, C, E, E, mem_dim] spatial memories (bfloat16 by default)
    obj_ptr: jax.Array     # [O, C, hidden] object pointers (float32)
    frame_idx: jax.Array   # [O, C] int32
    is_cond: jax.Array     # [O, C] bool: a prompted frame
    valid: jax.Array       # [O, C] bool: the slot holds a memory
    object_score: jax.Array  # [O, C] float32 object score logits, for inspection and policies
    # [O, C] int32: for a prompted slot, when its frame became prompted (1, 2, ... per object;
    # re-prompting a prompted frame keeps its place). The official keeps prompted frames in a
    # dict in that order, and it breaks ties in closest-frame selection by it.
    cond_order: jax.Array

    @property
    def num_objects(self) -> int:
        return self.valid.shape[0]

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]


def empty_bank(cfg: SAM2Config, num_objects: int, capacity: int,
               memory_dtype=jnp.bfloat16) -> MemoryBank:
    e, m = cfg.embedding_size, cfg.memory
    o, c = num_objects, capacity
    return MemoryBank(
        maskmem=jnp.zeros((o, c, e, e, m.mem_dim), memory_dtype),
        obj_ptr=jnp.zeros((o, c, cfg.hidden_dim), jnp.float32),
        frame_idx=jnp.full((o, c), -1, jnp.int32),
        is_cond=jnp.zeros((o, c), bool),
        valid=jnp.zeros((o, c), bool),
        object_score=jnp.zeros((o, c), jnp.float32),
        cond_order=jnp.zeros((o, c), jnp.int32),
    )


def write(bank: MemoryBank, slot, maskmem, obj_ptr, frame_idx, is_cond, object_score,
          where=None) -> MemoryBank:
    """Store one frame's memory per object at `slot` [O]; objects with `where` false keep theirs.

    maskmem [O, E, E, D], obj_ptr [O, hidden], object_score [O] or [O, 1]; frame_idx and
    is_cond scalars or [O].
    """
    o = bank.num_objects
    rows = jnp.arange(o)
    slot = jnp.broadcast_to(jnp.asarray(slot, jnp.int32), (o,))
    keep = jnp.ones((o,), bool) if where is None else jnp.broadcast_to(where, (o,))

    def put(field, value):
        old = field[rows, slot]
        value = jnp.broadcast_to(jnp.asarray(value).astype(field.dtype), old.shape)
        mask = keep.reshape((o,) + (1,) * (old.ndim - 1))
        return field.at[rows, slot].set(jnp.where(mask, value, old))

    is_cond = jnp.broadcast_to(jnp.asarray(is_cond, bool), (o,))
    prompted = bank.valid & bank.is_cond
    same_frame = bank.frame_idx[rows, slot] == jnp.broadcast_to(jnp.asarray(frame_idx), (o,))
    was_cond = prompted[rows, slot] & same_frame
    next_order = jnp.where(prompted, bank.cond_order, 0).max(1) + 1
    order = jnp.where(is_cond, jnp.where(was_cond, bank.cond_order[rows, slot], next_order), 0)
    return bank.replace(
        maskmem=put(bank.maskmem, maskmem),
        obj_ptr=put(bank.obj_ptr, obj_ptr),
        frame_idx=put(bank.frame_idx, frame_idx),
        is_cond=put(bank.is_cond, is_cond),
        valid=put(bank.valid, True),
        object_score=put(bank.object_score, jnp.reshape(object_score, (o,))),
        cond_order=put(bank.cond_order, order),
    )


def forget(bank: MemoryBank, drop) -> MemoryBank:
    """Mark the slots where `drop` [O, C] is true as empty."""
    return bank.replace(valid=bank.valid & ~drop, is_cond=bank.is_cond & ~drop)


def streaming_slot(bank: MemoryBank, frame_idx, is_cond) -> jax.Array:
    """Where a streaming tracker stores frame `frame_idx` for each object: the slot that
    already holds that frame, else a free slot, else the oldest non-prompted memory (prompted
    memories are never evicted)."""
    same = bank.valid & (bank.frame_idx == frame_idx)
    free = ~bank.valid
    big = jnp.iinfo(jnp.int32).max
    evictable = bank.valid & ~bank.is_cond
    oldest = jnp.argmin(jnp.where(evictable, bank.frame_idx, big), axis=1)
    return jnp.where(same.any(1), jnp.argmax(same, 1),
                     jnp.where(free.any(1), jnp.argmax(free, 1), oldest)).astype(jnp.int32)


# --- which memories a frame attends to ------------------------------------------------------


@flax.struct.dataclass
class MemorySelection:
    """The memories one frame attends to, as slots of a bank (per object).

    mem_*: spatial memories; tpos is the official temporal position (0 for prompted frames,
    1..num_maskmem-1 for recent ones, larger = closer). ptr_*: object pointers with their
    temporal distance to the current frame; ptr_scale normalises those distances.
    """

    mem_slots: jax.Array   # [O, S] int32
    mem_tpos: jax.Array    # [O, S] int32
    mem_valid: jax.Array   # [O, S] bool
    ptr_slots: jax.Array   # [O, P] int32
    ptr_dist: jax.Array    # [O, P] float32
    ptr_valid: jax.Array   # [O, P] bool
    ptr_scale: jax.Array   # [] float32


def _closest_cond(cfg: SAM2Config, bank: MemoryBank, frame_idx):
    """[O, C] bool: the prompted frames in attention (all, or the temporally closest ones)."""
    cond = bank.valid & bank.is_cond
    limit = cfg.memory.max_cond_frames_in_attn
    if limit == -1:
        return cond
    t = bank.frame_idx
    big = jnp.iinfo(jnp.int32).max
    before = cond & (t < frame_idx)
    after = cond & (t >= frame_idx)
    idx_before = jnp.argmax(jnp.where(before, t, -big), axis=1)
    idx_after = jnp.argmin(jnp.where(after, t, big), axis=1)
    slots = jnp.arange(bank.capacity)[None]
    first = ((slots == idx_before[:, None]) & before.any(1, keepdims=True)) | (
        (slots == idx_after[:, None]) & after.any(1, keepdims=True))
    # The rest by temporal distance, ties to the frame prompted first, as the official's
    # stable sort over its dict does. Two stable integer sorts: exact at any frame index.
    by_prompt = jnp.argsort(jnp.where(cond, bank.cond_order, big), axis=1, stable=True)
    key = jnp.where(first, -1, jnp.where(cond, jnp.abs(t - frame_idx), big))
    order = jnp.take_along_axis(
        by_prompt, jnp.argsort(jnp.take_along_axis(key, by_prompt, axis=1), axis=1, stable=True),
        axis=1)
    rank = jnp.argsort(order, axis=1)
    few = cond.sum(1, keepdims=True) <= limit
    return jnp.where(few, cond, cond & (rank < limit))


def _lookup(bank: MemoryBank, usable, target):
    """Slot [O] holding frame `target` among `usable` [O, C] slots, and whether it exists."""
    hit = usable & (bank.frame_idx == target)
    return jnp.argmax(hit, axis=1).astype(jnp.int32), hit.any(1)


def default_policy(cfg: SAM2Config, bank: MemoryBank, frame_idx, reverse, num_frames,
                   max_cond: int) -> MemorySelection:
    """The official choice of memories for frame `frame_idx`.

    Spatial: the prompted frames (all of them, or the `max_cond_frames_in_attn` closest), then
    the previous `num_maskmem - 1` frames in tracking order (every
    `memory_temporal_stride_for_eval`-th, plus the adjacent one). Pointers: those of the
    selected prompted frames not in the future, then of up to `min(num_frames,
    max_obj_ptrs_in_encoder) - 1` preceding frames. `max_cond` (static) is the number of
    prompted-frame slots in the selection; the caller keeps it >= the prompted frames in use.
    `reverse` may be a traced bool; `num_frames` a traced int (a large number for a stream).
    """
    m = cfg.memory
    f = jnp.asarray(frame_idx, jnp.int32)
    reverse = jnp.asarray(reverse, bool)
    num_frames = jnp.asarray(num_frames, jnp.int32)
    t = bank.frame_idx

    selected = _closest_cond(cfg, bank, f)
    # Prompted slots first (by frame), padded with unused slots.
    order = jnp.argsort(jnp.where(selected, t, jnp.iinfo(jnp.int32).max), axis=1)
    cond_slots = order[:, :max_cond].astype(jnp.int32)
    cond_valid = jnp.take_along_axis(selected, cond_slots, axis=1)
    # Non-prompted memories, and prompted ones that lost the closeness selection.
    others = bank.valid & (~bank.is_cond | ~selected)

    stride = m.memory_temporal_stride_for_eval
    slots, tpos, valid = [cond_slots], [jnp.zeros_like(cond_slots)], [cond_valid]
    for t_pos in range(1, m.num_maskmem):
        t_rel = m.num_maskmem - t_pos
        if t_rel == 1:
            target = jnp.where(reverse, f + 1, f - 1)
        else:
            fwd = jnp.floor_divide(f - 2, stride) * stride - (t_rel - 2) * stride
            bwd = -jnp.floor_divide(-(f + 2), stride) * stride + (t_rel - 2) * stride
            target = jnp.where(reverse, bwd, fwd)
        slot, ok = _lookup(bank, others, target)
        slots.append(slot[:, None])
        tpos.append(jnp.full_like(slot[:, None], t_pos))
        valid.append(ok[:, None])
    mem_slots = jnp.concatenate(slots, 1)
    mem_tpos = jnp.concatenate(tpos, 1)
    mem_valid = jnp.concatenate(valid, 1)

    sign = jnp.where(reverse, -1, 1)
    max_ptrs = jnp.minimum(num_frames, m.max_obj_ptrs_in_encoder)
    if m.use_obj_ptrs_in_encoder:
        ct = jnp.take_along_axis(t, cond_slots, axis=1)
        ok = cond_valid
        if m.only_obj_ptrs_in_the_past_for_eval:
            ok = ok & jnp.where(reverse, ct >= f, ct <= f)
        d = (f - ct) * sign if m.use_signed_tpos_enc_to_obj_ptrs else jnp.abs(f - ct)
        p_slots, p_dist, p_valid = [cond_slots], [d], [ok]
        for t_diff in range(1, m.max_obj_ptrs_in_encoder):
            target = jnp.where(reverse, f + t_diff, f - t_diff)
            in_range = (t_diff < max_ptrs) & (target >= 0) & (target < num_frames)
            slot, ok = _lookup(bank, others, target)
            p_slots.append(slot[:, None])
            p_dist.append(jnp.full_like(slot[:, None], t_diff))
            p_valid.append((ok & in_range)[:, None])
        ptr_slots = jnp.concatenate(p_slots, 1)
        ptr_dist = jnp.concatenate(p_dist, 1).astype(jnp.float32)
        ptr_valid = jnp.concatenate(p_valid, 1)
    else:
        o = bank.num_objects
        ptr_slots = jnp.zeros((o, 0), jnp.int32)
        ptr_dist = jnp.zeros((o, 0), jnp.float32)
        ptr_valid = jnp.zeros((o, 0), bool)
    # The official divides by (max pointers - 1); a one-frame video never gets here.
    ptr_scale = jnp.maximum(max_ptrs - 1, 1).astype(jnp.float32)
    return MemorySelection(mem_slots, mem_tpos, mem_valid, ptr_slots, ptr_dist, ptr_valid,
                           ptr_scale)
