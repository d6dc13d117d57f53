"""The SAM 3 tracker's memory selection ("temporal disambiguation", PyPI `sam3`:
`Sam3TrackerBase.frame_filter` with `use_memory_selection`, on by default in its video model).

Each tracked memory gets a score: the predicted IoU of its mask times the object score
rescaled to [0, 1] (`2 * sigmoid(s) - 1`, 0 for an absent object). Walking back from the
current frame in steps of the memory stride, memories scoring above `mf_threshold` are kept,
up to `min(num_frames, max_obj_ptrs_in_encoder) - 1`, and the adjacent frame is always added.
The newest `num_maskmem - 1` of them are the spatial memories; all but the oldest give the
object pointers, each placed at its rank in the list. Prompted frames are chosen as the
official model does.

The reference averages the score over the objects it tracks in one batch; here each object
has its own (the two agree for one object).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank
from samv2_jax.tracking.policies.base import MemorySelection, PolicyBase
from samv2_jax.tracking.policies.gated import (
    gated_recent,
    gated_spatial,
    prompted_and_others,
    ranked_pointers,
)


def memory_score(object_score, iou):
    """SAM 3's per-memory score: IoU x the object score mapped to [0, 1] (0 if absent)."""
    present = jnp.where(object_score > 0, jax.nn.sigmoid(object_score) * 2 - 1, 0.0)
    return present * iou


@dataclasses.dataclass(frozen=True)
class Sam3Policy(PolicyBase):
    """The SAM 3 tracker's selection with its published threshold."""

    mf_threshold: float = 0.01
    history: int = 32

    def recent_frames(self, cfg: SAM2Config) -> int:
        return max(super().recent_frames(cfg), self.history)

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        m = cfg.memory
        f = jnp.asarray(frame_idx, jnp.int32)
        reverse = jnp.asarray(reverse, bool)
        num_frames = jnp.asarray(num_frames, jnp.int32)
        cond_slots, cond_valid, others = prompted_and_others(cfg, bank, f, max_cond)
        r = m.memory_temporal_stride_for_eval
        t = bank.frame_idx
        dist = jnp.where(reverse, t - f, f - t)
        on_stride = (dist - 1) % r == 0
        # forward it walks down to frame 1, backward up to the last frame
        in_range = jnp.where(reverse, t < num_frames, t >= 1)
        passes = (memory_score(bank.object_score, bank.iou) > self.mf_threshold) & on_stride \
            & in_range
        # nothing is selected on the first frame of the tracking direction
        at_start = jnp.where(reverse, f == num_frames - 1, f == 0)
        passes = passes & ~at_start
        max_len = m.max_obj_ptrs_in_encoder - 1
        limit = jnp.minimum(num_frames, m.max_obj_ptrs_in_encoder) - 1
        slots, exists, length = gated_recent(cfg, bank, f, reverse, passes, limit, max_len,
                                             others)
        exists = exists & ~at_start
        length = jnp.where(at_start, 0, length)
        mem = gated_spatial(cfg, slots, exists, length, cond_slots, cond_valid)
        ptrs = ranked_pointers(cfg, bank, f, reverse, num_frames, slots, exists, length,
                               cond_slots, cond_valid)
        return MemorySelection(*mem, *ptrs)
