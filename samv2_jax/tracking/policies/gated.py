"""Memory selection gated by a per-memory score, the scheme SAMURAI, SAM2Long and the SAM 3
tracker share (each with its own gate).

Walking back from the current frame, the most recent tracked (non-prompted) memories that
pass the gate are kept, up to `limit`; the adjacent frame (the one just tracked) is always
added as the newest entry, whether it passes or not. Spatial memories are the newest
`num_maskmem - 1` entries, the newest at the highest temporal position; SAM2Long and SAM 3
also take their object pointers from this list, at their rank in it (1 = newest).
"""

from __future__ import annotations

import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank, find_frame
from samv2_jax.tracking.policies.official import prompted_slots

_BIG = jnp.iinfo(jnp.int32).max


def gated_recent(cfg: SAM2Config, bank: MemoryBank, f, reverse, passes, limit, max_len: int,
                 others):
    """The gated list, newest first: (slots [O, max_len + 1], exists [O, max_len + 1],
    length [O]); entry 0 is the adjacent frame, entries 1.. the older passing memories.

    passes [O, C]: the gate on each slot (only valid, non-prompted slots before the frame in
    tracking order count); limit (traced, <= max_len static): how many passing memories the
    list holds, the adjacent one included when it passes; others [O, C]: where the adjacent
    frame may be found (non-prompted, or prompted but not selected, as the official looks).
    `length` counts the adjacent entry even where its memory is missing, as the references'
    lists do (a missing entry still takes its place).
    """
    t = bank.frame_idx
    dist = jnp.where(reverse, t - f, f - t)
    tracked = bank.valid & ~bank.is_cond & (dist >= 1)
    ok = tracked & passes
    adjacent = jnp.where(reverse, f + 1, f - 1)
    adj_slot, adj_exists = find_frame(bank, others, adjacent)
    adj_passes = (ok & (dist == 1)).any(1)
    older = ok & (dist >= 2)
    order = jnp.argsort(jnp.where(older, dist, _BIG), axis=1)[:, :max_len]
    passing = jnp.take_along_axis(older, order, axis=1)
    if order.shape[1] < max_len:  # a small bank: pad the list with empty entries
        pad = max_len - order.shape[1]
        order = jnp.pad(order, ((0, 0), (0, pad)))
        passing = jnp.pad(passing, ((0, 0), (0, pad)))
    rank = jnp.arange(max_len)[None]
    take = passing & (rank < (limit - adj_passes.astype(jnp.int32))[:, None])
    slots = jnp.concatenate([adj_slot[:, None], order.astype(jnp.int32)], 1)
    exists = jnp.concatenate([adj_exists[:, None], take], 1)
    length = 1 + take.sum(1)
    return slots, exists, length


def gated_spatial(cfg: SAM2Config, slots, exists, length, cond_slots, cond_valid):
    """Spatial memories from the gated list: the prompted ones (temporal position 0), then the
    newest `num_maskmem - 1` entries (the newest at position num_maskmem - 1)."""
    n = cfg.memory.num_maskmem - 1
    j = jnp.arange(n)[None]
    mem_slots = jnp.concatenate([cond_slots, slots[:, :n]], 1)
    mem_tpos = jnp.concatenate([jnp.zeros_like(cond_slots),
                                jnp.broadcast_to(n - j, slots[:, :n].shape)], 1)
    mem_valid = jnp.concatenate([cond_valid, exists[:, :n] & (j < length[:, None])], 1)
    return mem_slots, mem_tpos.astype(jnp.int32), mem_valid


def ranked_pointers(cfg: SAM2Config, bank: MemoryBank, f, reverse, num_frames, slots, exists,
                    length, cond_slots, cond_valid):
    """Object pointers of the prompted frames (as the official) and of the gated list's
    entries but its oldest, each at its rank in the list (1 = newest) as SAM2Long and SAM 3
    place them. -> (slots, distances, valid, scale)."""
    m = cfg.memory
    ct = jnp.take_along_axis(bank.frame_idx, cond_slots, axis=1)
    ok = cond_valid & jnp.where(reverse, ct >= f, ct <= f) if \
        m.only_obj_ptrs_in_the_past_for_eval else cond_valid
    sign = jnp.where(reverse, -1, 1)
    d = (f - ct) * sign if m.use_signed_tpos_enc_to_obj_ptrs else jnp.abs(f - ct)
    k = slots.shape[1] - 1
    j = jnp.arange(k)[None]
    max_ptrs = jnp.minimum(num_frames, m.max_obj_ptrs_in_encoder)
    scale = jnp.maximum(max_ptrs - 1, 1).astype(jnp.float32)
    recent_ok = exists[:, :k] & (j < (length - 1)[:, None]) & (j + 1 < max_ptrs)
    return (jnp.concatenate([cond_slots, slots[:, :k]], 1),
            jnp.concatenate([d, jnp.broadcast_to(j + 1, slots[:, :k].shape)], 1
                            ).astype(jnp.float32),
            jnp.concatenate([ok, recent_ok], 1), scale)


def prompted_and_others(cfg: SAM2Config, bank: MemoryBank, f, max_cond: int):
    """(cond_slots, cond_valid, others): the selected prompted memories and where the
    ordinary ones may be looked up (as `OfficialPolicy`)."""
    cond_slots, cond_valid, selected = prompted_slots(cfg, bank, f, max_cond)
    others = bank.valid & (~bank.is_cond | ~selected)
    return cond_slots, cond_valid, others
