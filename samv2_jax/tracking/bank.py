"""The memory bank: a fixed-capacity pytree of past frames' memories, and every operation on it.

A bank holds, per object (leading axis) and per slot, one frame's spatial memory (the memory
encoder's output), its object pointer, its frame index, whether it is a prompted
("conditioning") frame and when it was prompted, and whether the slot is in use. Shapes never
change as it fills, so a jit-compiled step that takes and returns a bank compiles once.

Two ways of addressing slots cover the two uses:
- offline (a whole video, like the official predictor): one slot per frame, slot == frame index;
- streaming: a ring of recent frames plus room for prompted frames (`streaming_slot`).
Memory policies (`samv2_jax.tracking.policies`) look entries up by frame index, so they work
the same on both. Every function here is pure: it returns a new bank.

Slots also record what the published memory policies judge a memory by (the chosen mask's
predicted IoU and area, beside its object score), and the bank carries the policy's own
per-row state (`policy_state`, any pytree whose leaves lead with the row axis) so that it
travels with the bank through the jit-compiled step and `lax.scan`. A policy that keeps
several hypotheses per object (SAM2Long's pathways) gives each object `pathways` consecutive
rows; the per-object operations below then act on all rows of an object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    # [O, C] float32: the predicted IoU of the mask each memory was made from (1 for a mask
    # prompt), and that mask's area in low-resolution pixels (-1 where nobody recorded it).
    iou: jax.Array | None = None
    area: jax.Array | None = None
    # The memory policy's own state, per row (None for policies without one).
    policy_state: Any = None
    # Rows per object (static): > 1 only for policies that keep several hypotheses.
    pathways: int = flax.struct.field(pytree_node=False, default=1)

    @property
    def num_rows(self) -> int:
        return self.valid.shape[0]

    @property
    def num_objects(self) -> int:
        return self.valid.shape[0] // self.pathways

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]


def empty_bank(cfg: SAM2Config, num_objects: int, capacity: int,
               memory_dtype=jnp.bfloat16, *, policy=None) -> MemoryBank:
    """A bank with no memories for `num_objects` objects and `capacity` slots each; with a
    `policy`, its rows per object (`policy.pathways`) and its initial state."""
    e, m = cfg.embedding_size, cfg.memory
    pathways = int(getattr(policy, "pathways", 1))
    o, c = num_objects * pathways, capacity
    state = None if policy is None else policy.init_state(cfg, o, c)
    return MemoryBank(
        maskmem=jnp.zeros((o, c, e, e, m.mem_dim), memory_dtype),
        obj_ptr=jnp.zeros((o, c, cfg.hidden_dim), jnp.float32),
        frame_idx=jnp.full((o, c), -1, jnp.int32),
        is_cond=jnp.zeros((o, c), bool),
        valid=jnp.zeros((o, c), bool),
        object_score=jnp.zeros((o, c), jnp.float32),
        cond_order=jnp.zeros((o, c), jnp.int32),
        iou=jnp.zeros((o, c), jnp.float32),
        area=jnp.zeros((o, c), jnp.float32),
        policy_state=state,
        pathways=pathways,
    )


def write(bank: MemoryBank, slot, maskmem, obj_ptr, frame_idx, is_cond, object_score,
          where=None, *, iou=None, area=None) -> MemoryBank:
    """Store one frame's memory per row at `slot` [O]; rows with `where` false keep theirs.

    maskmem [O, E, E, D], obj_ptr [O, hidden], object_score [O] or [O, 1]; frame_idx and
    is_cond scalars or [O]; iou and area (the chosen mask's predicted IoU and its area)
    scalars or [O], by default 1 and -1 (not recorded).
    """
    o = bank.num_rows
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
        **_recorded(bank, put, o, iou, area),
    )


def _recorded(bank: MemoryBank, put, o: int, iou, area) -> dict:
    """The IoU / area fields of a write (banks made before these fields keep None)."""
    if bank.iou is None:
        return {}
    iou = 1.0 if iou is None else jnp.reshape(jnp.asarray(iou, jnp.float32), (-1,))
    area = -1.0 if area is None else jnp.reshape(jnp.asarray(area, jnp.float32), (-1,))
    return {"iou": put(bank.iou, jnp.broadcast_to(iou, (o,))),
            "area": put(bank.area, jnp.broadcast_to(area, (o,)))}


def forget(bank: MemoryBank, drop) -> MemoryBank:
    """Mark the slots where `drop` [O, C] is true as empty (per object; with several rows
    per object, every row of it)."""
    drop = jnp.asarray(drop)
    if bank.pathways > 1 and drop.shape[0] != bank.num_rows:
        drop = jnp.repeat(drop, bank.pathways, axis=0)
    return bank.replace(valid=bank.valid & ~drop, is_cond=bank.is_cond & ~drop)


def streaming_slot(bank: MemoryBank, frame_idx) -> jax.Array:
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


def find_frame(bank: MemoryBank, usable, target):
    """Slot [O] holding frame `target` among the `usable` [O, C] slots, and whether it exists."""
    hit = usable & (bank.frame_idx == target)
    return jnp.argmax(hit, axis=1).astype(jnp.int32), hit.any(1)


# --- per-object operations (the predictors add, remove and prompt objects one at a time) ----


def append_objects(bank: MemoryBank | None, new: MemoryBank) -> MemoryBank:
    """`bank` with the objects of `new` after its own (`bank` None: just `new`)."""
    if bank is None:
        return new
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b], 0), bank, new)


def object_rows(bank: MemoryBank, objects: Sequence[int]) -> list[int]:
    """The bank rows of the given objects, in order (one row each unless the policy keeps
    several pathways per object)."""
    p = bank.pathways
    return [int(o) * p + k for o in objects for k in range(p)]


def lead_rows(bank: MemoryBank) -> MemoryBank:
    """One row per object: its first (best) pathway, as a one-pathway bank."""
    if bank.pathways == 1:
        return bank
    idx = jnp.arange(bank.num_objects, dtype=jnp.int32) * bank.pathways
    return jax.tree.map(lambda x: x[idx], bank).replace(pathways=1)


def take_objects(bank: MemoryBank, rows: Sequence[int]) -> MemoryBank:
    """The bank of the objects at `rows`, in that order (e.g. one object, or all but one)."""
    idx = jnp.asarray(object_rows(bank, rows), jnp.int32)
    return jax.tree.map(lambda x: x[idx], bank)


def write_object(bank: MemoryBank, obj: int, slot, maskmem, obj_ptr, frame_idx, is_cond,
                 object_score, *, iou=None, area=None) -> MemoryBank:
    """Store one object's memory of one frame (maskmem [1, E, E, D], obj_ptr [1, hidden],
    object_score of one element) at `slot`; the other objects keep theirs."""
    o = bank.num_rows
    return write(bank, slot, jnp.broadcast_to(maskmem, (o, *maskmem.shape[1:])),
                 jnp.broadcast_to(obj_ptr, (o, obj_ptr.shape[-1])), frame_idx, is_cond,
                 jnp.broadcast_to(jnp.reshape(object_score, (-1,)), (o,)),
                 where=jnp.arange(o) // bank.pathways == obj, iou=iou, area=area)


def demote_prompted(bank: MemoryBank, obj: int, frame_idx) -> MemoryBank:
    """Object `obj`'s memory of `frame_idx` stays, but as an ordinary (non-prompted) memory."""
    rows = (jnp.arange(bank.num_rows) // bank.pathways == obj)[:, None]
    return bank.replace(is_cond=bank.is_cond & ~(rows & (bank.frame_idx == frame_idx)))
