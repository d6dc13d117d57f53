"""Exact facts about upsampled masks without upsampling them: host-side numpy.

The official generator upsamples every candidate's [n, n] logits to the crop's size (bilinear,
align_corners=False) to count pixels above two thresholds (the stability score), to find its
box and to binarise it. Each output pixel reads its value from one 2 x 2 cell of low-resolution
logits. A cell whose four values all lie above a threshold (by a margin larger than rounding)
gives only pixels above it, one whose values all lie below gives none; only the cells a
threshold cuts through need their pixels computed. Those are a thin band along the mask's
boundary, so a candidate at 1200 x 1800 costs its band's few hundred thousand pixels rather
than two million, and every number is still the one the full upsampling gives: the band's
pixels are computed with the same float32 operations in the same order as
`samv2_jax.modeling.transforms.postprocess_masks` (width first, then height).
"""

from __future__ import annotations

import functools

import numpy as np

from samv2_jax.modeling.transforms import _taps_linear

# An upsampled value can leave the range of its cell's four values by a few float32 ulps of
# their magnitude (weights sum to 1 only up to rounding); 1e-5 of the largest |logit| is far
# more than that, and only decides which cells are evaluated pixel by pixel.
_SLACK = 1e-5


class _Axis:
    """The bilinear taps along one axis (n_in -> n_out) grouped by their first source index:
    output positions start[k] .. start[k] + count[k] - 1 read from (k, min(k + 1, n - 1)),
    with weights w0[k, j], w1[k, j] (j < count[k]; zero padding beyond)."""

    def __init__(self, n_in: int, n_out: int):
        idx, w = _taps_linear(n_in, n_out, np.float32)
        i0 = idx[:, 0]
        self.count = np.bincount(i0, minlength=n_in)
        self.start = np.concatenate(([0], np.cumsum(self.count)[:-1]))
        self.width = max(int(self.count.max()), 1)  # most outputs per cell
        pos = np.arange(n_out) - self.start[i0]  # place within its cell
        self.w0 = np.zeros((n_in, self.width), np.float32)
        self.w1 = np.zeros((n_in, self.width), np.float32)
        self.w0[i0, pos], self.w1[i0, pos] = w[:, 0], w[:, 1]
        self.valid = np.arange(self.width)[None] < self.count[:, None]


@functools.lru_cache(maxsize=32)
def _axes(n: int, out_hw: tuple[int, int]) -> tuple[_Axis, _Axis]:
    return _Axis(n, out_hw[0]), _Axis(n, out_hw[1])


def _cell_extremes(logits):
    """Max and min over each [..., k, l] cell: rows k, k + 1 and columns l, l + 1 (clamped)."""
    down = np.concatenate([logits[..., 1:, :], logits[..., -1:, :]], axis=-2)
    hi, lo = np.maximum(logits, down), np.minimum(logits, down)
    right = lambda x: np.concatenate([x[..., :, 1:], x[..., :, -1:]], axis=-1)
    return np.maximum(hi, right(hi)), np.minimum(lo, right(lo))


class CellMasks:
    """Upsampled masks of a stack of [K, n, n] logits at `out_hw`, held as cells: for each
    threshold, which cells are entirely above it, and the exact pixels of the cells it cuts.

    `thresholds` are the values masks are compared with (`value > threshold`), float32.
    """

    def __init__(self, logits, out_hw: tuple[int, int], thresholds):
        logits = np.ascontiguousarray(logits, np.float32)
        self.k, n, _ = logits.shape
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        self.rows, self.cols = _axes(n, self.out_hw)
        self.thresholds = np.asarray(thresholds, np.float32)
        cmax, cmin = _cell_extremes(logits)
        slack = _SLACK * (1.0 + np.abs(logits).max(axis=(1, 2)))[:, None, None]
        cut = np.zeros(logits.shape, bool)
        self.full = []
        for t in self.thresholds:
            full = cmin > t + slack
            cut |= ~full & (cmax >= t - slack)
            self.full.append(full)
        self.full = [f & ~cut for f in self.full]  # cells wholly above, not evaluated
        self.band = np.nonzero(cut)  # (mask, row cell, column cell) of the evaluated cells
        self.values, self.ys, self.xs, self.valid = self._band_pixels(logits)

    def _band_pixels(self, logits):
        """Exact upsampled values of the band's pixels: [B, R, S] with their output rows and
        columns (R x S covers the largest cell; padding marked invalid)."""
        m, k, j = self.band  # mask, row cell, column cell
        n = logits.shape[-1]
        k1, j1 = np.minimum(k + 1, n - 1), np.minimum(j + 1, n - 1)
        r, c = self.rows, self.cols
        w0, w1 = c.w0[j], c.w1[j]  # [B, S]
        v0, v1 = r.w0[k][:, :, None], r.w1[k][:, :, None]  # [B, R, 1]
        # Width first, then height, each a sum of (value * weight) terms in tap order.
        t0 = logits[m, k, j][:, None] * w0 + logits[m, k, j1][:, None] * w1
        t1 = logits[m, k1, j][:, None] * w0 + logits[m, k1, j1][:, None] * w1
        values = t0[:, None, :] * v0 + t1[:, None, :] * v1
        ys = r.start[k][:, None] + np.arange(r.width)[None]  # [B, R]
        xs = c.start[j][:, None] + np.arange(c.width)[None]  # [B, S]
        return values, ys, xs, r.valid[k][:, :, None] & c.valid[j][:, None, :]

    def _segments(self) -> np.ndarray:
        """Band cells are sorted by mask: mask i owns band[seg[i]:seg[i + 1]]."""
        return np.searchsorted(self.band[0], np.arange(self.k + 1))

    def counts(self, which: int) -> np.ndarray:
        """[K] int64: pixels above thresholds[which]."""
        weights = np.outer(self.rows.count, self.cols.count)
        out = (self.full[which] * weights).sum(axis=(1, 2))
        above = (self.values > self.thresholds[which]) & self.valid
        return out + np.bincount(self.band[0], above.sum(axis=(1, 2)),
                                 minlength=self.k).astype(np.int64)

    def boxes(self, which: int) -> np.ndarray:
        """[K, 4] int64 XYXY boxes (inclusive) of the pixels above thresholds[which]; zeros
        for an empty mask (official `batched_mask_to_box`)."""
        h, w = self.out_hw
        r, c = self.rows, self.cols
        full = self.full[which]
        y0 = np.full(self.k, h, np.int64)
        y1 = np.full(self.k, -1, np.int64)
        x0 = np.full(self.k, w, np.int64)
        x1 = np.full(self.k, -1, np.int64)
        rows_any = full.any(axis=2) & (r.count > 0)  # [K, n] row cells with set pixels
        cols_any = full.any(axis=1) & (c.count > 0)
        for flags, ax, lo, hi in ((rows_any, r, y0, y1), (cols_any, c, x0, x1)):
            has = flags.any(axis=1)
            first = np.argmax(flags, axis=1)
            last = flags.shape[1] - 1 - np.argmax(flags[:, ::-1], axis=1)
            lo[has] = ax.start[first[has]]
            hi[has] = ax.start[last[has]] + ax.count[last[has]] - 1
        above = (self.values > self.thresholds[which]) & self.valid  # [B, R, S]
        on_y, on_x = above.any(axis=2), above.any(axis=1)
        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        per_cell = (np.where(on_y, self.ys, big).min(axis=1),
                    np.where(on_y, self.ys, small).max(axis=1),
                    np.where(on_x, self.xs, big).min(axis=1),
                    np.where(on_x, self.xs, small).max(axis=1))
        seg = self._segments()
        has = seg[1:] > seg[:-1]
        if has.any():
            at = seg[:-1][has]
            for out, vals, op in ((y0, per_cell[0], np.minimum), (y1, per_cell[1], np.maximum),
                                  (x0, per_cell[2], np.minimum), (x1, per_cell[3], np.maximum)):
                out[has] = op(out[has], op.reduceat(vals, at))
        box = np.stack([x0, y0, x1, y1], axis=1)
        return np.where((x1 >= x0)[:, None], box, 0)

    def mask(self, i: int, which: int, box=None) -> np.ndarray:
        """Mask i thresholded at thresholds[which]: bool [H, W], or only the pixels of
        `box` (XYXY inclusive) when given."""
        r, c = self.rows, self.cols
        full = np.repeat(np.repeat(self.full[which][i], r.count, axis=0), c.count, axis=1)
        seg = self._segments()
        sel = slice(seg[i], seg[i + 1])
        keep = self.valid[sel]
        above = self.values[sel] > self.thresholds[which]
        ys = np.broadcast_to(self.ys[sel][:, :, None], keep.shape)
        xs = np.broadcast_to(self.xs[sel][:, None, :], keep.shape)
        full[ys[keep], xs[keep]] = above[keep]
        if box is None:
            return full
        bx0, by0, bx1, by1 = (int(v) for v in box)
        return full[by0:by1 + 1, bx0:bx1 + 1].copy()


def stability_and_boxes(logits, out_hw, mask_threshold: float, high: float, low: float):
    """[K, n, n] logits -> (stability [K] float32, boxes [K, 4], cells) as the official computes
    them on the masks upsampled to `out_hw`: stability = #(> high) / #(> low) (NaN for an empty
    union), boxes of the pixels > mask_threshold. `cells` can then make the masks."""
    cells = CellMasks(logits, out_hw, (high, low, mask_threshold))
    inter, union = cells.counts(0), cells.counts(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stability = inter.astype(np.float32) / union.astype(np.float32)
    return stability, cells.boxes(2), cells
