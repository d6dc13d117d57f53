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
    """The bilinear taps along one axis (n_in -> n_out) grouped by their first source index k:
    output positions start[k] .. start[k] + count[k] - 1 read from (k, min(k + 1, n - 1)).

    For evaluation each group is cut into pieces of at most `width` outputs (only the edge
    groups, which also take the clamped outputs, need more than one): piece p covers outputs
    p_start[p] .. + p_count[p] - 1 of group p_cell[p], with weights p_w0[p], p_w1[p]."""

    def __init__(self, n_in: int, n_out: int):
        idx, w = _taps_linear(n_in, n_out, np.float32)
        i0 = idx[:, 0]
        self.count = np.bincount(i0, minlength=n_in)
        self.start = np.concatenate(([0], np.cumsum(self.count)[:-1]))
        inner = self.count[1:-1] if n_in > 2 else self.count
        self.width = max(int(inner.max()) if inner.size else 1, 1)
        self.n_pieces = np.maximum(-(-self.count // self.width), 1)
        self.first_piece = np.concatenate(([0], np.cumsum(self.n_pieces)[:-1]))
        self.p_cell = np.repeat(np.arange(n_in), self.n_pieces)
        within = np.arange(len(self.p_cell)) - self.first_piece[self.p_cell]
        self.p_start = self.start[self.p_cell] + within * self.width
        end = self.start[self.p_cell] + self.count[self.p_cell]
        self.p_count = np.clip(end - self.p_start, 0, self.width)
        offs = np.arange(self.width)
        pos = np.minimum(self.p_start[:, None] + offs[None], max(n_out - 1, 0))  # [P, width]
        self.p_valid = (offs[None] < self.p_count[:, None]).T  # [width, P]
        self.p_w0 = np.where(self.p_valid, w[pos, 0].T, 0).astype(np.float32)  # [width, P]
        self.p_w1 = np.where(self.p_valid, w[pos, 1].T, 0).astype(np.float32)
        self.p_pos = self.p_start[None] + offs[:, None]  # [width, P] output positions
        self.cell_of = i0  # the group of each output position


@functools.lru_cache(maxsize=32)
def _axes(n: int, out_hw: tuple[int, int]) -> tuple[_Axis, _Axis]:
    return _Axis(n, out_hw[0]), _Axis(n, out_hw[1])


def _cell_extremes(logits):
    """Max and min over each [..., k, l] cell: rows k, k + 1 and columns l, l + 1 (clamped)."""
    down = np.concatenate([logits[..., 1:, :], logits[..., -1:, :]], axis=-2)
    hi, lo = np.maximum(logits, down), np.minimum(logits, down)
    right = lambda x: np.concatenate([x[..., :, 1:], x[..., :, -1:]], axis=-1)
    return np.maximum(hi, right(hi)), np.minimum(lo, right(lo))


# Work in pieces that stay in cache: fresh multi-MB numpy temporaries cost more in page
# faults than in arithmetic.
_MASKS_PER_STEP = 8
_BAND_PER_STEP = 8192


class CellMasks:
    """Upsampled masks of a stack of [K, n, n] logits at `out_hw`, held as cells: for each
    threshold, which cells are entirely above it, and for the cells it cuts, how many of their
    pixels are above it or (for the thresholds in `boxes_for`, default all) where the first
    and last such rows and columns are.

    `thresholds` are the values masks are compared with (`value > threshold`), float32.
    """

    def __init__(self, logits, out_hw: tuple[int, int], thresholds, boxes_for=None,
                 band_stats: bool = True):
        self.logits = np.ascontiguousarray(logits, np.float32)
        # Thresholds whose boxes are wanted (their counts are not kept), default all.
        self.extent_of = set(range(len(thresholds))) if boxes_for is None else set(boxes_for)
        self.k, n, _ = self.logits.shape
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        self.rows, self.cols = _axes(n, self.out_hw)
        self.thresholds = np.asarray(thresholds, np.float32)
        nt = len(self.thresholds)
        self.full = [np.zeros(self.logits.shape, bool) for _ in range(nt)]
        cut = np.zeros(self.logits.shape, bool)
        for a in range(0, self.k, _MASKS_PER_STEP):
            part = self.logits[a:a + _MASKS_PER_STEP]
            cmax, cmin = _cell_extremes(part)
            slack = _SLACK * (1.0 + np.abs(part).max(axis=(1, 2)))[:, None, None]
            for i, t in enumerate(self.thresholds):
                full = cmin > t + slack
                cut[a:a + len(part)] |= ~full & (cmax >= t - slack)
                self.full[i][a:a + len(part)] = full
        for f in self.full:
            f &= ~cut  # cells wholly above a threshold and cut by none
        self.band = self._pieces(np.nonzero(cut))
        # Per band entry and threshold: pixels above it, and their row / column extent.
        nb = len(self.band[0])
        self.above = np.zeros((nt, nb), np.int64)
        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        self.extent = np.empty((nt, 4, nb), np.int64)
        self.extent[:, [0, 2]], self.extent[:, [1, 3]] = big, small
        for a in range(0, nb if band_stats else 0, _BAND_PER_STEP):  # else: masks only
            sel = slice(a, a + _BAND_PER_STEP)
            values, ys, xs, valid = self._band_pixels(sel)
            for i, t in enumerate(self.thresholds):
                above = (values > t) & valid  # [R, S, B]
                if i not in self.extent_of:
                    self.above[i, sel] = above.sum(axis=(0, 1))
                    continue
                on_y, on_x = above.any(axis=1), above.any(axis=0)
                self.extent[i, 0, sel] = np.where(on_y, ys, big).min(axis=0)
                self.extent[i, 1, sel] = np.where(on_y, ys, small).max(axis=0)
                self.extent[i, 2, sel] = np.where(on_x, xs, big).min(axis=0)
                self.extent[i, 3, sel] = np.where(on_x, xs, small).max(axis=0)

    def _pieces(self, band):
        """(mask, row cell, column cell) of the cut cells -> the same for every (row piece,
        column piece) of each, plus the piece indices, in the same order (sorted by mask)."""
        m, k, j = band
        r, c = self.rows, self.cols
        nr, nc = r.n_pieces[k], c.n_pieces[j]
        reps = nr * nc
        m, k, j, nc = (np.repeat(a, reps) for a in (m, k, j, nc))
        q = np.arange(len(m)) - np.repeat(np.cumsum(reps) - reps, reps)
        return m, k, j, r.first_piece[k] + q // nc, c.first_piece[j] + q % nc

    def _band_pixels(self, sel):
        """Exact upsampled values of band entries `sel`: [R, S, B] (the band last, so numpy's
        inner loops run along it), their output rows [R, B], columns [S, B], validity."""
        m, k, j, pr, pc = (a[sel] for a in self.band)
        logits = self.logits
        n = logits.shape[-1]
        k1, j1 = np.minimum(k + 1, n - 1), np.minimum(j + 1, n - 1)
        r, c = self.rows, self.cols
        w0, w1 = c.p_w0[:, pc], c.p_w1[:, pc]  # [S, B]
        v0, v1 = r.p_w0[:, pr][:, None], r.p_w1[:, pr][:, None]  # [R, 1, B]
        # Width first, then height, each a sum of (value * weight) terms in tap order.
        t0 = logits[m, k, j] * w0 + logits[m, k, j1] * w1
        t1 = logits[m, k1, j] * w0 + logits[m, k1, j1] * w1
        values = t0[None] * v0 + t1[None] * v1
        valid = r.p_valid[:, pr][:, None] & c.p_valid[:, pc][None]
        return values, r.p_pos[:, pr], c.p_pos[:, pc], valid

    def _segments(self) -> np.ndarray:
        """Band entries are sorted by mask: mask i owns entries seg[i]:seg[i + 1]."""
        return np.searchsorted(self.band[0], np.arange(self.k + 1))

    def counts(self, which: int) -> np.ndarray:
        """[K] int64: pixels above thresholds[which] (one not in `boxes_for`)."""
        if which in self.extent_of:
            raise ValueError("counts are kept for the thresholds outside boxes_for")
        weights = np.outer(self.rows.count, self.cols.count)
        out = (self.full[which] * weights).sum(axis=(1, 2))
        return out + np.bincount(self.band[0], self.above[which],
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
        seg = self._segments()
        has = seg[1:] > seg[:-1]
        if has.any():
            at = seg[:-1][has]
            ext = self.extent[which]
            for out, vals, op in ((y0, ext[0], np.minimum), (y1, ext[1], np.maximum),
                                  (x0, ext[2], np.minimum), (x1, ext[3], np.maximum)):
                out[has] = op(out[has], op.reduceat(vals, at))
        box = np.stack([x0, y0, x1, y1], axis=1)
        return np.where((x1 >= x0)[:, None], box, 0)

    def mask(self, i: int, which: int, box=None) -> np.ndarray:
        """Mask i thresholded at thresholds[which]: bool [H, W], or only the pixels of
        `box` (XYXY inclusive) when given (then only the cells under it are expanded)."""
        r, c = self.rows, self.cols
        h, w = self.out_hw
        bx0, by0, bx1, by1 = (0, 0, w - 1, h - 1) if box is None else (int(v) for v in box)
        k0, k1 = r.cell_of[by0], r.cell_of[by1]
        j0, j1 = c.cell_of[bx0], c.cell_of[bx1]
        block = self.full[which][i, k0:k1 + 1, j0:j1 + 1]
        block = np.repeat(np.repeat(block, r.count[k0:k1 + 1], axis=0), c.count[j0:j1 + 1],
                          axis=1)
        oy, ox = r.start[k0], c.start[j0]  # output position of block[0, 0]
        seg = self._segments()
        values, ys, xs, keep = self._band_pixels(slice(seg[i], seg[i + 1]))
        keep = (keep & ((ys >= by0) & (ys <= by1))[:, None]
                & ((xs >= bx0) & (xs <= bx1))[None])
        ys = np.broadcast_to(ys[:, None], keep.shape)
        xs = np.broadcast_to(xs[None], keep.shape)
        block[ys[keep] - oy, xs[keep] - ox] = values[keep] > self.thresholds[which]
        return block[by0 - oy:by1 - oy + 1, bx0 - ox:bx1 - ox + 1].copy()


def stability_and_boxes(logits, out_hw, mask_threshold: float, high: float, low: float):
    """[K, n, n] logits -> (stability [K] float32, boxes [K, 4], cells) as the official computes
    them on the masks upsampled to `out_hw`: stability = #(> high) / #(> low) (NaN for an empty
    union), boxes of the pixels > mask_threshold. `cells` can then make the masks."""
    cells = CellMasks(logits, out_hw, (high, low, mask_threshold), boxes_for=(2,))
    inter, union = cells.counts(0), cells.counts(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stability = inter.astype(np.float32) / union.astype(np.float32)
    return stability, cells.boxes(2), cells
