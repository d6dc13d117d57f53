"""DAM4SAM (SAM2.1++): a distractor-aware memory (Videnovic, Lukezic and Kristan, CVPR 2025,
"A Distractor-Aware Memory for Visual Object Tracking with SAM2"). Written from the paper and
from observing the reference's behaviour (jovanavidenovic/DAM4SAM has no licence; none of its
code is used).

The memory has two parts:

- the recent-appearance memory (RAM): the last frame where the target was visible, then
  frames on a stride of `ram_stride` going back (each the newest visible one on that
  lattice), so that `num_maskmem` memories in all are attended;
- the distractor-resolving memory (DRM): prompted memories, the user's plus frames the
  policy admits. The user's prompts are always attended (as the official chooses among them);
  of the admitted frames, the closest in time but the adjacent one (which the RAM holds) fill
  the DRM up to `drm_size` memories. A tracked frame is admitted when its mask is confident
  (predicted IoU above `admit_iou`), its area is within `area_ratio` of the median of the
  last `area_median_of` visible areas among the last `area_window` frames, at least
  `min_gap + 1` frames passed since the last admission, and an alternative mask reveals a
  distractor: one of the decoder's other masks, less the chosen one, keeps a largest
  connected part whose union with the chosen mask has a bounding box overlapping the chosen
  mask's box by at most `alt_box_iou` (the overlap as the VOT toolkit rasterises a mask's
  rectangle, `vot_box_overlap`). Admitted frames are stored as prompts (binarised mask);
  one that can no longer be attended (beyond the `drm_size` newest admitted and older than the
  pointer window) is forgotten, so a streaming bank does not fill with them.

Object pointers come from frames where the target was visible. The reference tracker grows
its video one frame at a time, so pointer distances are normalised by the frames seen so far
(`streaming_pointer_scale`). It tracks forward only, and so does the RAM walk here. Its
admission test runs at the video's resolution:
`decision_hw` (set by the predictors from the video, `for_video`), else at the model's input
size. scripts/reference/dam4sam.py runs the reference on the test video; the test compares
every frame's mask, admission and attended memories.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.mask_postprocess import connected_components
from samv2_jax.modeling.transforms import resize_bilinear
from samv2_jax.tracking.bank import MemoryBank
from samv2_jax.tracking.policies.base import (
    Candidates,
    MemorySelection,
    PolicyBase,
    WriteDecision,
)
from samv2_jax.tracking.policies.official import closest_prompted, select_pointers
from samv2_jax.tracking.policies.samurai import mask_boxes

_NONE = -(2**30)
_BIG = jnp.iinfo(jnp.int32).max


def _ram(bank: MemoryBank, f, stride: int, n: int, visible, selected):
    """Newest first, n entries: (slots [O, n], found [O, n]). Entry 0 is the frame before f
    (a prompted one too, unless it is attended as a prompt), else the newest visible tracked
    frame after frame 0; entry i then lies on the stride lattice below entry i - 1: the
    lattice point ((p - 1) // stride) * stride itself, or the newest visible tracked frame
    stride, 2 * stride, ... below it (above frame 0). The walk stops at the first miss."""
    t = bank.frame_idx
    tracked = bank.valid & ~bank.is_cond & visible
    prev_ok = bank.valid & visible & ~selected & (t == f - 1)
    cand0 = prev_ok | (tracked & (t < f - 1) & (t > 0))
    slots, found = [], []
    best = jnp.max(jnp.where(cand0, t, _NONE), axis=1)
    ok = best > _NONE
    slots.append(jnp.argmax(jnp.where(cand0, t, _NONE), axis=1))
    found.append(ok)
    p = best
    for _ in range(1, n):
        c0 = jnp.floor_divide(p - 1, stride) * stride
        on = tracked & (t <= c0[:, None]) & ((c0[:, None] - t) % stride == 0) \
            & ((t > 0) | (t == c0[:, None]))
        key = jnp.where(on, t, _NONE)
        best = jnp.max(key, axis=1)
        ok = ok & (best > _NONE) & (p >= 0)
        slots.append(jnp.argmax(key, axis=1))
        found.append(ok)
        p = jnp.where(ok, best, -1)
    return jnp.stack(slots, 1).astype(jnp.int32), jnp.stack(found, 1)


def vot_box_overlap(a, b):
    """Overlap of the rectangles of two masks' pixel boxes a, b [..., 4] (x0, y0, x1, y1, ends
    inclusive) as the VOT toolkit scores them: a mask's rectangle spans x1 - x0 by y1 - y0
    pixels from (x0, y0), the overlap is the pixel-count IoU of the two rasterised rectangles
    (0 when both are empty), and 1 when the union of their pixel bounds is flat."""
    ux0, uy0 = jnp.minimum(a[..., 0], b[..., 0]), jnp.minimum(a[..., 1], b[..., 1])
    ux1 = jnp.maximum(a[..., 2], b[..., 2]) - 1
    uy1 = jnp.maximum(a[..., 3], b[..., 3]) - 1
    iw = jnp.maximum(0.0, jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]))
    ih = jnp.maximum(0.0, jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    flat = (ux0 >= ux1) | (uy0 >= uy1)
    return jnp.where(flat, 1.0, jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 0.0))


def reveals_distractor(chosen, alternatives, max_box_iou: float):
    """[R] bool: does some alternative mask [R, A, H, W] (bool), less the chosen [R, H, W],
    keep a largest connected part whose union with the chosen mask has a bounding box that
    overlaps the chosen mask's box by at most `max_box_iou`? (The reference takes OpenCV's
    8-connected components; between parts of equal size it keeps OpenCV's first label, this
    the part met first in raster order.)"""
    rest = alternatives & ~chosen[:, None]
    nonempty = rest.any((-1, -2))
    labels, areas = connected_components(rest)
    # the largest part; ties go to the part met first in raster order (smallest label)
    big = jnp.max(areas, axis=(-1, -2), keepdims=True)
    first = jnp.min(jnp.where((areas == big) & (labels > 0), labels, 2**30), axis=(-1, -2),
                    keepdims=True)
    part = labels == first
    union = part | chosen[:, None]
    box_c = mask_boxes(chosen.astype(jnp.float32))[:, None]
    box_u = mask_boxes(union.astype(jnp.float32))
    return (nonempty & (vot_box_overlap(box_c, box_u) <= max_box_iou)).any(-1)


def recent_median(sizes, entries, count, window: int):
    """Median of the recorded areas (`sizes` [R, K], recorded at entry numbers `entries`)
    among the last `window` entries before `count`; NaN where there are none."""
    ok = (entries >= count[:, None] - window) & (entries >= 0)
    n = ok.sum(1)
    v = jnp.sort(jnp.where(ok, sizes, jnp.inf), axis=1)
    lo = jnp.take_along_axis(v, jnp.maximum((n - 1) // 2, 0)[:, None], 1)[:, 0]
    hi = jnp.take_along_axis(v, jnp.maximum(n // 2, 0)[:, None], 1)[:, 0]
    return jnp.where(n > 0, (lo + hi) / 2, jnp.nan)


def drm_selection(cfg: SAM2Config, bank: MemoryBank, f, reverse, admitted, drm_size: int):
    """[R, C] bool: the prompted memories frame f attends to. Every user prompt (among them,
    the official choice when the config limits them), then of the admitted memories the
    closest in time, the adjacent frame excepted, until `drm_size` are attended (the
    reference's frame 0, the closest before the adjacent frame and the closest others)."""
    user = bank.valid & bank.is_cond & ~admitted
    chosen_user = closest_prompted(cfg, bank.replace(is_cond=user), f)
    t = bank.frame_idx
    adjacent = jnp.where(reverse, f + 1, f - 1)
    candidates = admitted & (t != adjacent)
    key = jnp.where(candidates, jnp.abs(t - f), _BIG)
    # ties (a frame before and one after at the same distance) go to the earlier prompt
    by_prompt = jnp.argsort(jnp.where(candidates, bank.cond_order, _BIG), axis=1, stable=True)
    order = jnp.take_along_axis(
        by_prompt, jnp.argsort(jnp.take_along_axis(key, by_prompt, axis=1), axis=1, stable=True),
        axis=1)
    rank = jnp.argsort(order, axis=1)
    room = jnp.maximum(drm_size - chosen_user.sum(1, keepdims=True), 0)
    return chosen_user | (candidates & (rank < room))


@dataclasses.dataclass(frozen=True)
class Dam4SamPolicy(PolicyBase):
    """DAM4SAM with the published settings (its `sam21pp` configs and tracker)."""

    ram_stride: int = 5
    drm_size: int = 4
    admit_iou: float = 0.8
    area_ratio: tuple[float, float] = (0.8, 1.2)
    area_window: int = 300
    area_median_of: int = 10
    min_gap: int = 5
    alt_box_iou: float = 0.7
    streaming_pointer_scale: bool = True
    decision_hw: tuple[int, int] | None = None
    history: int = 32

    def for_video(self, video_hw):
        if self.decision_hw is not None:
            return self
        return dataclasses.replace(self, decision_hw=(int(video_hw[0]), int(video_hw[1])))

    def recent_frames(self, cfg: SAM2Config) -> int:
        m = cfg.memory
        # admitted memories are kept as prompts beside the recent ones
        return max((m.num_maskmem - 2) * self.ram_stride + 1, m.max_obj_ptrs_in_encoder - 1,
                   self.history) + self.drm_size

    def init_state(self, cfg: SAM2Config, num_rows: int, capacity: int):
        r, k = num_rows, self.area_median_of
        return {"sizes": jnp.zeros((r, k), jnp.float32),
                "size_entry": jnp.full((r, k), -1, jnp.int32),
                "count": jnp.zeros((r,), jnp.int32),
                "last_added": jnp.full((r,), -1, jnp.int32),
                # per slot: the frame admitted into it (-1: none), which tells the
                # policy's own prompted memories from the user's
                "drm_frame": jnp.full((r, capacity), -1, jnp.int32)}

    def admitted(self, bank: MemoryBank):
        """[R, C] bool: the slots holding a memory this policy admitted into the DRM."""
        return (bank.valid & bank.is_cond
                & (bank.frame_idx == bank.policy_state["drm_frame"]))

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        m = cfg.memory
        f = jnp.asarray(frame_idx, jnp.int32)
        reverse = jnp.asarray(reverse, bool)
        num_frames = jnp.asarray(num_frames, jnp.int32)
        selected = drm_selection(cfg, bank, f, reverse, self.admitted(bank), self.drm_size)
        room_cond = max(max_cond, self.drm_size)
        order = jnp.argsort(jnp.where(selected, bank.frame_idx, _BIG), axis=1)
        cond_slots = order[:, :room_cond].astype(jnp.int32)
        cond_valid = jnp.take_along_axis(selected, cond_slots, axis=1)
        visible = bank.area >= 1
        n_ram = m.num_maskmem - 1
        slots, found = _ram(bank, f, self.ram_stride, n_ram, visible, selected)
        # num_maskmem memories in all: each attended prompt leaves one RAM place less
        room = m.num_maskmem - cond_valid.sum(1)
        i = jnp.arange(n_ram)[None]
        found = found & (i < room[:, None])
        tpos = jnp.broadcast_to(m.num_maskmem - 1 - i, slots.shape)
        mem_slots = jnp.concatenate([cond_slots, slots], 1)
        mem_tpos = jnp.concatenate([jnp.zeros_like(cond_slots), tpos], 1).astype(jnp.int32)
        mem_valid = jnp.concatenate([cond_valid, found], 1)
        if self.streaming_pointer_scale:
            num_frames = jnp.minimum(num_frames, f + 1)
        others = bank.valid & (~bank.is_cond | ~selected) & visible
        ptr = select_pointers(cfg, bank, f, reverse, num_frames, cond_slots, cond_valid, others)
        return MemorySelection(mem_slots, mem_tpos, mem_valid, *ptr)

    def decide_write(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, out: dict,
                     frame_idx, slot, write):
        st = bank.policy_state
        f = jnp.asarray(frame_idx, jnp.int32)
        s = cfg.image_size
        hw = self.decision_hw or (s, s)
        shown = resize_bilinear(out["pred_masks"][:, 0, :, :, None], hw)[..., 0] > 0
        n = shown.sum((1, 2)).astype(jnp.float32)
        # record this frame's area (only visible ones enter the median)
        entry = st["count"]
        nz = n >= 1
        sizes = jnp.where(nz[:, None], jnp.concatenate([st["sizes"][:, 1:], n[:, None]], 1),
                          st["sizes"])
        entries = jnp.where(nz[:, None],
                            jnp.concatenate([st["size_entry"][:, 1:], entry[:, None]], 1),
                            st["size_entry"])
        count = entry + 1
        median = recent_median(sizes, entries, count, self.area_window)
        ratio = jnp.where((count > 1) & nz, n / median, -1.0)
        lo, hi = self.area_ratio
        gap = (f - st["last_added"] > self.min_gap) | (st["last_added"] == -1)
        confident = (out["iou"] > self.admit_iou) & (ratio >= lo) & (ratio <= hi) & nz & gap \
            & write
        m_cand = cand.ious.shape[1]
        if m_cand > 1:
            def test():
                best = jnp.argmax(cand.ious, -1)
                others = jnp.stack([jnp.where(k < best, k, k + 1) for k in range(m_cand - 1)],
                                   1)
                alt = jnp.take_along_axis(cand.masks, others[:, :, None, None], axis=1)
                r, a = alt.shape[:2]
                alt = resize_bilinear(alt.reshape(r * a, *alt.shape[2:])[..., None], hw)[..., 0]
                alt = alt.reshape(r, a, *hw) > 0
                return reveals_distractor(shown, alt, self.alt_box_iou)

            admit = confident & jax.lax.cond(confident.any(), test,
                                             lambda: jnp.zeros_like(confident))
        else:
            admit = jnp.zeros_like(confident)
        keep = write
        rows = jnp.arange(bank.num_rows)
        drm_frame = st["drm_frame"].at[rows, slot].set(
            jnp.where(write, jnp.where(admit, f, -1), st["drm_frame"][rows, slot]))
        state = {"sizes": jnp.where(keep[:, None], sizes, st["sizes"]),
                 "size_entry": jnp.where(keep[:, None], entries, st["size_entry"]),
                 "count": jnp.where(keep, count, st["count"]),
                 "last_added": jnp.where(admit, f, st["last_added"]),
                 "drm_frame": drm_frame}
        bank = bank.replace(policy_state=state)
        return WriteDecision(slot, write, admit), self._forget_unreachable(cfg, bank, f, slot,
                                                                            admit)

    def _forget_unreachable(self, cfg: SAM2Config, bank: MemoryBank, f, slot, admit):
        """Forget admitted memories no later frame attends to: beyond the `drm_size` newest
        admitted (this frame's included) and out of the object-pointer window."""
        adm = self.admitted(bank) & (jnp.arange(bank.capacity)[None] != slot[:, None])
        t = bank.frame_idx
        dist = jnp.abs(f - t)
        newer = (adm[:, None, :] & (dist[:, None, :] < dist[:, :, None])).sum(-1) \
            + admit[:, None]
        window = cfg.memory.max_obj_ptrs_in_encoder - 1
        drop = adm & (newer >= self.drm_size) & (dist >= window)
        return bank.replace(valid=bank.valid & ~drop, is_cond=bank.is_cond & ~drop)
