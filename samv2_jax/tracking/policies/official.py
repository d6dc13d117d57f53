"""The official choice of memories (`SAM2Base._prepare_memory_conditioned_features`)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank, find_frame
from samv2_jax.tracking.policies.base import MemorySelection, PolicyBase

_BIG = jnp.iinfo(jnp.int32).max


def closest_prompted(cfg: SAM2Config, bank: MemoryBank, frame_idx):
    """[O, C] bool: the prompted frames in attention: all of them, or with
    `max_cond_frames_in_attn` the temporally closest (official `select_closest_cond_frames`)."""
    cond = bank.valid & bank.is_cond
    limit = cfg.memory.max_cond_frames_in_attn
    if limit == -1:
        return cond
    t = bank.frame_idx
    before = cond & (t < frame_idx)
    after = cond & (t >= frame_idx)
    idx_before = jnp.argmax(jnp.where(before, t, -_BIG), axis=1)
    idx_after = jnp.argmin(jnp.where(after, t, _BIG), axis=1)
    slots = jnp.arange(bank.capacity)[None]
    first = ((slots == idx_before[:, None]) & before.any(1, keepdims=True)) | (
        (slots == idx_after[:, None]) & after.any(1, keepdims=True))
    # The rest by temporal distance, ties to the frame prompted first, as the official's
    # stable sort over its dict does. Two stable integer sorts: exact at any frame index.
    by_prompt = jnp.argsort(jnp.where(cond, bank.cond_order, _BIG), axis=1, stable=True)
    key = jnp.where(first, -1, jnp.where(cond, jnp.abs(t - frame_idx), _BIG))
    order = jnp.take_along_axis(
        by_prompt, jnp.argsort(jnp.take_along_axis(key, by_prompt, axis=1), axis=1, stable=True),
        axis=1)
    rank = jnp.argsort(order, axis=1)
    few = cond.sum(1, keepdims=True) <= limit
    return jnp.where(few, cond, cond & (rank < limit))


def select_spatial(cfg: SAM2Config, bank: MemoryBank, frame_idx, reverse, cond_slots,
                   cond_valid, others):
    """Spatial memories: the selected prompted slots (temporal position 0), then the previous
    `num_maskmem - 1` frames in tracking order among `others` (every
    `memory_temporal_stride_for_eval`-th, plus the adjacent one). -> (slots, tpos, valid)."""
    m = cfg.memory
    f = frame_idx
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
        slot, ok = find_frame(bank, others, target)
        slots.append(slot[:, None])
        tpos.append(jnp.full_like(slot[:, None], t_pos))
        valid.append(ok[:, None])
    return jnp.concatenate(slots, 1), jnp.concatenate(tpos, 1), jnp.concatenate(valid, 1)


def select_pointers(cfg: SAM2Config, bank: MemoryBank, frame_idx, reverse, num_frames,
                    cond_slots, cond_valid, others):
    """Object pointers: those of the selected prompted frames (not in the future, unless the
    config allows it), then of up to `min(num_frames, max_obj_ptrs_in_encoder) - 1` preceding
    frames among `others`. -> (slots, distances, valid, scale)."""
    m = cfg.memory
    f = frame_idx
    sign = jnp.where(reverse, -1, 1)
    max_ptrs = jnp.minimum(num_frames, m.max_obj_ptrs_in_encoder)
    # The official divides by (max pointers - 1); a one-frame video never gets here.
    scale = jnp.maximum(max_ptrs - 1, 1).astype(jnp.float32)
    if not m.use_obj_ptrs_in_encoder:
        o = bank.num_objects
        return (jnp.zeros((o, 0), jnp.int32), jnp.zeros((o, 0), jnp.float32),
                jnp.zeros((o, 0), bool), scale)
    ct = jnp.take_along_axis(bank.frame_idx, cond_slots, axis=1)
    ok = cond_valid
    if m.only_obj_ptrs_in_the_past_for_eval:
        ok = ok & jnp.where(reverse, ct >= f, ct <= f)
    d = (f - ct) * sign if m.use_signed_tpos_enc_to_obj_ptrs else jnp.abs(f - ct)
    p_slots, p_dist, p_valid = [cond_slots], [d], [ok]
    for t_diff in range(1, m.max_obj_ptrs_in_encoder):
        target = jnp.where(reverse, f + t_diff, f - t_diff)
        in_range = (t_diff < max_ptrs) & (target >= 0) & (target < num_frames)
        slot, ok = find_frame(bank, others, target)
        p_slots.append(slot[:, None])
        p_dist.append(jnp.full_like(slot[:, None], t_diff))
        p_valid.append((ok & in_range)[:, None])
    return (jnp.concatenate(p_slots, 1), jnp.concatenate(p_dist, 1).astype(jnp.float32),
            jnp.concatenate(p_valid, 1), scale)


def prompted_slots(cfg: SAM2Config, bank: MemoryBank, f, max_cond: int):
    """The prompted memories in attention, as (cond_slots [O, max_cond], cond_valid, selected
    [O, C]): the selected prompted slots first (by frame), padded with unused slots."""
    selected = closest_prompted(cfg, bank, f)
    order = jnp.argsort(jnp.where(selected, bank.frame_idx, _BIG), axis=1)
    cond_slots = order[:, :max_cond].astype(jnp.int32)
    cond_valid = jnp.take_along_axis(selected, cond_slots, axis=1)
    return cond_slots, cond_valid, selected


@dataclasses.dataclass(frozen=True)
class OfficialPolicy(PolicyBase):
    """The official memory selection, exactly: prompted frames (all of them, or the
    `max_cond_frames_in_attn` closest, ties broken by prompt order), the previous
    `num_maskmem - 1` frames with `memory_temporal_stride_for_eval`, and up to
    `max_obj_ptrs_in_encoder` object pointers with their temporal distances (signed when
    tracking in reverse). It has no settings of its own: those are the model config's."""

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        f = jnp.asarray(frame_idx, jnp.int32)
        reverse = jnp.asarray(reverse, bool)
        num_frames = jnp.asarray(num_frames, jnp.int32)
        cond_slots, cond_valid, selected = prompted_slots(cfg, bank, f, max_cond)
        # Non-prompted memories, and prompted ones that lost the closeness selection.
        others = bank.valid & (~bank.is_cond | ~selected)
        mem_slots, mem_tpos, mem_valid = select_spatial(cfg, bank, f, reverse, cond_slots,
                                                        cond_valid, others)
        ptr_slots, ptr_dist, ptr_valid, ptr_scale = select_pointers(
            cfg, bank, f, reverse, num_frames, cond_slots, cond_valid, others)
        return MemorySelection(mem_slots, mem_tpos, mem_valid, ptr_slots, ptr_dist, ptr_valid,
                               ptr_scale)
