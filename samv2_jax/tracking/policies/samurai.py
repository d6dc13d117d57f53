"""SAMURAI: motion-aware mask choice and score-gated memory (Yang et al., 2024,
"SAMURAI: Adapting Segment Anything Model for Zero-Shot Visual Tracking with Motion-Aware
Memory"; reference code yangchris11/samurai, Apache-2.0).

Each object carries a Kalman filter on its box (centre x, y, aspect ratio, height and their
velocities; constant-velocity motion, noise proportional to the height). While the track is
not yet stable the filter only follows the best-IoU mask; once it has been updated on
`stable_frames_threshold` frames in a row, the frame's mask is the candidate with the best
weighted score `kf_score_weight * IoU(predicted box, mask box) + (1 - w) * predicted IoU`.
A chosen mask whose predicted IoU falls below `stable_ious_threshold` resets the count.
Memories are kept only from frames whose mask had a predicted IoU above
`memory_bank_iou_threshold`, a positive object score and (where the filter scored it) a
positive motion score; objects count as present above `min_obj_score_logits`.

Differences from the reference, all deliberate: the filter state is per object (the
reference keeps one filter in the model, so it tracks one object); it starts on the first
tracked frame (the reference also steps it when a single click is decoded with several
masks; box prompts, SAMURAI's use, decode one mask and start it at the same frame); and it
runs in float32 (the reference in float64).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank
from samv2_jax.tracking.policies.base import (
    Candidates,
    MaskChoice,
    MemorySelection,
    PolicyBase,
    WriteDecision,
)
from samv2_jax.tracking.policies.gated import gated_recent, gated_spatial, prompted_and_others
from samv2_jax.tracking.policies.official import select_pointers

# The filter's noise, relative to the box height (the reference's values).
_STD_POSITION = 1.0 / 20
_STD_VELOCITY = 1.0 / 160


def xyxy_to_xyah(box):
    """[..., 4] (x0, y0, x1, y1) -> (centre x, centre y, width / height, height); a box of
    zero height counts as height 1."""
    x0, y0, x1, y1 = jnp.moveaxis(box, -1, 0)
    h = y1 - y0
    h = jnp.where(h == 0, 1.0, h)
    return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / h, h], -1)


def xyah_to_xyxy(xyah):
    x, y, a, h = jnp.moveaxis(xyah, -1, 0)
    w = a * h
    return jnp.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1)


def kf_initiate(measurement):
    """[..., 4] xyah -> (mean [..., 8], covariance [..., 8, 8]); velocities start at 0."""
    h = measurement[..., 3]
    mean = jnp.concatenate([measurement, jnp.zeros_like(measurement)], -1)
    std = jnp.stack([2 * _STD_POSITION * h, 2 * _STD_POSITION * h, jnp.full_like(h, 1e-2),
                     2 * _STD_POSITION * h, 10 * _STD_VELOCITY * h, 10 * _STD_VELOCITY * h,
                     jnp.full_like(h, 1e-5), 10 * _STD_VELOCITY * h], -1)
    return mean, _diag(std ** 2)


def _diag(v):
    return v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)


def _motion():
    return jnp.eye(8).at[jnp.arange(4), jnp.arange(4) + 4].set(1.0)


def kf_predict(mean, cov):
    """One constant-velocity step with noise proportional to the height."""
    h = mean[..., 3]
    std = jnp.stack([_STD_POSITION * h, _STD_POSITION * h, jnp.full_like(h, 1e-2),
                     _STD_POSITION * h, _STD_VELOCITY * h, _STD_VELOCITY * h,
                     jnp.full_like(h, 1e-5), _STD_VELOCITY * h], -1)
    f = _motion()
    mean = mean @ f.T
    cov = f @ cov @ f.T + _diag(std ** 2)
    return mean, cov


def kf_update(mean, cov, measurement):
    """Correct the state with a measured box (xyah)."""
    h = mean[..., 3]
    std = jnp.stack([_STD_POSITION * h, _STD_POSITION * h, jnp.full_like(h, 1e-1),
                     _STD_POSITION * h], -1)
    proj_mean = mean[..., :4]
    proj_cov = cov[..., :4, :4] + _diag(std ** 2)
    # gain = cov H^T S^-1 (S symmetric positive definite)
    gain = jnp.swapaxes(jnp.linalg.solve(proj_cov, jnp.swapaxes(cov[..., :, :4], -1, -2)),
                        -1, -2)
    innovation = measurement - proj_mean
    mean = mean + jnp.einsum("...ij,...j->...i", gain, innovation)
    cov = cov - gain @ proj_cov @ jnp.swapaxes(gain, -1, -2)
    return mean, cov


def mask_boxes(masks):
    """[..., H, W] logits -> [..., 4] (x_min, y_min, x_max, y_max) of the pixels > 0 (max
    inclusive), all zero for an empty mask."""
    fg = masks > 0
    cols, rows = fg.any(-2), fg.any(-1)
    w, h = fg.shape[-1], fg.shape[-2]
    x0 = jnp.argmax(cols, -1)
    x1 = w - 1 - jnp.argmax(cols[..., ::-1], -1)
    y0 = jnp.argmax(rows, -1)
    y1 = h - 1 - jnp.argmax(rows[..., ::-1], -1)
    box = jnp.stack([x0, y0, x1, y1], -1).astype(jnp.float32)
    return jnp.where(cols.any(-1)[..., None], box, 0.0)


def box_iou(a, b):
    """IoU of boxes [..., 4] (areas as (x1 - x0) * (y1 - y0)); an all-zero box b scores 0."""
    iw = jnp.maximum(0.0, jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]))
    ih = jnp.maximum(0.0, jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
             + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter)
    iou = jnp.where(union != 0, inter / jnp.where(union != 0, union, 1.0), 0.0)
    return jnp.where((b == 0).all(-1), 0.0, iou)


@dataclasses.dataclass(frozen=True)
class SamuraiPolicy(PolicyBase):
    """SAMURAI with the published defaults (its `configs/samurai/*.yaml`)."""

    stable_frames_threshold: int = 15
    stable_ious_threshold: float = 0.3
    min_obj_score_logits: float = -1.0
    kf_score_weight: float = 0.25
    memory_bank_iou_threshold: float = 0.5
    memory_bank_obj_score_threshold: float = 0.0
    memory_bank_kf_score_threshold: float = 0.0
    # A streaming bank keeps this many recent frames, for the gated walk back.
    history: int = 32

    @property
    def presence_threshold(self) -> float:
        return self.min_obj_score_logits

    def recent_frames(self, cfg: SAM2Config) -> int:
        return max(super().recent_frames(cfg), self.history)

    def init_state(self, cfg: SAM2Config, num_rows: int, capacity: int):
        r, c = num_rows, capacity
        return {
            "kf_mean": jnp.zeros((r, 8), jnp.float32),
            "kf_cov": jnp.zeros((r, 8, 8), jnp.float32),
            "started": jnp.zeros((r,), bool),
            "stable_frames": jnp.zeros((r,), jnp.int32),
            # this frame's motion score (kf_ok false: the filter did not score it) ...
            "frame_kf_score": jnp.zeros((r,), jnp.float32),
            "frame_kf_ok": jnp.zeros((r,), bool),
            # ... and every memory's
            "kf_score": jnp.zeros((r, c), jnp.float32),
            "kf_ok": jnp.zeros((r, c), bool),
        }

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        f = jnp.asarray(frame_idx, jnp.int32)
        reverse = jnp.asarray(reverse, bool)
        st = bank.policy_state
        cond_slots, cond_valid, others = prompted_and_others(cfg, bank, f, max_cond)
        passes = ((bank.iou > self.memory_bank_iou_threshold)
                  & (bank.object_score > self.memory_bank_obj_score_threshold)
                  & (~st["kf_ok"] | (st["kf_score"] > self.memory_bank_kf_score_threshold))
                  # the reference walks back to frame 2 (forward tracking only)
                  & (reverse | (bank.frame_idx >= 2)))
        limit = cfg.memory.max_obj_ptrs_in_encoder - 1
        slots, exists, length = gated_recent(cfg, bank, f, reverse, passes, limit, limit, others)
        mem = gated_spatial(cfg, slots, exists, length, cond_slots, cond_valid)
        ptrs = select_pointers(cfg, bank, f, reverse, jnp.asarray(num_frames, jnp.int32),
                               cond_slots, cond_valid, others)
        return MemorySelection(*mem, *ptrs)

    def choose_mask(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, frame_idx, *,
                    reverse):
        st = bank.policy_state
        ious = cand.ious
        boxes = mask_boxes(cand.high_res)                      # [R, M, 4]
        best_iou = jnp.argmax(ious, -1)
        fresh = ~st["started"] | (st["stable_frames"] == 0)
        settling = ~fresh & (st["stable_frames"] < self.stable_frames_threshold)
        stable = ~fresh & ~settling
        pmean, pcov = kf_predict(st["kf_mean"], st["kf_cov"])
        kf_ious = box_iou(xyah_to_xyxy(pmean[:, :4])[:, None], boxes)   # [R, M]
        w = self.kf_score_weight
        best_weighted = jnp.argmax(w * kf_ious + (1 - w) * ious, -1)
        best = jnp.where(stable, best_weighted, best_iou).astype(jnp.int32)
        rows = jnp.arange(ious.shape[0])
        chosen_iou = ious[rows, best]
        measured = xyxy_to_xyah(boxes[rows, best])
        init_mean, init_cov = kf_initiate(measured)
        upd_mean, upd_cov = kf_update(pmean, pcov, measured)
        ok = jnp.where(settling, chosen_iou > self.stable_ious_threshold,
                       chosen_iou >= self.stable_ious_threshold)
        mean = jnp.where(fresh[:, None], init_mean,
                         jnp.where(ok[:, None], upd_mean, pmean))
        cov = jnp.where(fresh[:, None, None], init_cov,
                        jnp.where(ok[:, None, None], upd_cov, pcov))
        count = jnp.where(fresh | (settling & ok), st["stable_frames"] + 1,
                          jnp.where(ok, st["stable_frames"], 0))
        state = dict(st, kf_mean=mean, kf_cov=cov, started=jnp.ones_like(st["started"]),
                     stable_frames=count.astype(jnp.int32),
                     frame_kf_score=kf_ious[rows, best], frame_kf_ok=stable)
        return MaskChoice(best), bank.replace(policy_state=state)

    def decide_write(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, out: dict,
                     frame_idx, slot, write):
        st = bank.policy_state
        rows = jnp.arange(bank.num_rows)
        keep = write
        kf_score = st["kf_score"].at[rows, slot].set(
            jnp.where(keep, st["frame_kf_score"], st["kf_score"][rows, slot]))
        kf_ok = st["kf_ok"].at[rows, slot].set(
            jnp.where(keep, st["frame_kf_ok"], st["kf_ok"][rows, slot]))
        state = dict(st, kf_score=kf_score, kf_ok=kf_ok)
        return WriteDecision(slot, write), bank.replace(policy_state=state)
