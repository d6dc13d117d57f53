"""The automatic mask generator's mask arithmetic in JAX, all under jit with static shapes:
stability scores (and a bound on them from the low-resolution logits), boxes around masks,
the crop-edge test and greedy non-maximum suppression. (Exact scores and boxes of upsampled
masks come from `cells.py`, which never builds the full-size masks.)

Official counterparts (`sam2.utils.amg`): `calculate_stability_score`, `batched_mask_to_box`,
`is_box_near_crop_edge`, and torchvision's `batched_nms` with a single category.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.modeling.transforms import _taps_linear

# Relative slack of the low-resolution stability bound: bilinear weights sum to 1 only up to
# rounding, so an upsampled value may leave the range of its four source values by a few
# float32 ulps of their magnitude. 1e-5 of the largest logit is ~100 times that.
_BOUND_SLACK = 1e-5


# --- stability --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def cell_weights(low_size: int, out_hw: tuple[int, int]) -> np.ndarray:
    """[n, n] int32: how many output pixels of the bilinear upsampling (n x n -> out_hw) read
    their four source values from the 2 x 2 low-resolution cell whose top-left is (k, l).

    Every output pixel takes its rows from (i0, min(i0 + 1, n - 1)) for one i0, and its columns
    likewise, so it belongs to exactly one cell; the weights are the outer product of the row
    and column counts. They come from the same tap tables the upsampling uses."""
    h, w = out_hw
    rows = np.bincount(_taps_linear(low_size, h, np.float32)[0][:, 0], minlength=low_size)
    cols = np.bincount(_taps_linear(low_size, w, np.float32)[0][:, 0], minlength=low_size)
    out = np.outer(rows, cols).astype(np.int32)
    out.setflags(write=False)
    return out


def _cell_extremes(logits):
    """Max and min over each pixel's 2 x 2 cell (k..k+1, l..l+1, clamped at the last row and
    column) of [..., n, n] logits."""
    def down(x):
        return jnp.concatenate([x[..., 1:, :], x[..., -1:, :]], axis=-2)

    def right(x):
        return jnp.concatenate([x[..., :, 1:], x[..., :, -1:]], axis=-1)

    hi = jnp.maximum(logits, down(logits))
    lo = jnp.minimum(logits, down(logits))
    return jnp.maximum(hi, right(hi)), jnp.minimum(lo, right(lo))


def stability_upper_bound(logits, weights, high, low):
    """An upper bound, from [K, n, n] low-resolution logits, of the stability score their
    bilinear upsampling (with cell `weights`, see `cell_weights`) would get, with the
    thresholds `high` = mask_threshold + offset and `low` = mask_threshold - offset.

    An upsampled value lies between the min and max of its cell's four values, so at most
    the pixels of cells whose max exceeds `high` can be in the intersection, and at least
    those of cells whose min exceeds `low` are in the union. Masks whose
    bound is below the stability threshold can be dropped before anything is upsampled;
    the bound is +inf where the union bound is empty."""
    logits = logits.astype(jnp.float32)
    cmax, cmin = _cell_extremes(logits)
    slack = _BOUND_SLACK * (1.0 + jnp.max(jnp.abs(logits), axis=(-2, -1), keepdims=True))
    weights = jnp.asarray(weights)
    inter = jnp.sum(jnp.where(cmax > high - slack, weights, 0), (-2, -1))
    union = jnp.sum(jnp.where(cmin > low + slack, weights, 0), (-2, -1))
    return jnp.where(union > 0, inter.astype(jnp.float32) / jnp.maximum(union, 1), jnp.inf)


def stability_scores(masks, high, low):
    """IoU of the masks [..., H, W] thresholded at `high` and `low` (mask_threshold +- offset;
    official `calculate_stability_score`; NaN for an empty union, as there)."""
    inter = jnp.sum(masks > high, axis=(-2, -1), dtype=jnp.int32)
    union = jnp.sum(masks > low, axis=(-2, -1), dtype=jnp.int32)
    return inter.astype(jnp.float32) / union.astype(jnp.float32)


# --- boxes ------------------------------------------------------------------------------------

def boxes_from_rows_cols(rows, cols):
    """[..., H] and [..., W] "any pixel set" flags -> [..., 4] int32 XYXY boxes with inclusive
    ends, [0, 0, 0, 0] for an empty mask (official `batched_mask_to_box`)."""
    def first_last(flags):
        n = flags.shape[-1]
        idx = jnp.arange(n, dtype=jnp.int32)
        first = jnp.min(jnp.where(flags, idx, n), axis=-1)
        last = jnp.max(jnp.where(flags, idx, -1), axis=-1)
        return first, last

    y0, y1 = first_last(rows)
    x0, x1 = first_last(cols)
    box = jnp.stack([x0, y0, x1, y1], axis=-1)
    return jnp.where((x1 >= x0)[..., None], box, 0)


def masks_to_boxes(masks):
    """[..., H, W] bool -> [..., 4] int32 XYXY, inclusive ends, zeros when empty."""
    masks = jnp.asarray(masks, bool)
    return boxes_from_rows_cols(jnp.any(masks, axis=-1), jnp.any(masks, axis=-2))


def near_crop_edge(boxes, crop_box, orig_box, atol: float = 20.0):
    """[K, 4] boxes in the crop's frame: True where a side lies within `atol` pixels of the
    crop's edge but not of the image's (official `is_box_near_crop_edge`)."""
    crop = jnp.asarray(crop_box, jnp.float32)
    boxes = boxes.astype(jnp.float32) + jnp.concatenate([crop[:2], crop[:2]])
    near_crop = jnp.abs(boxes - crop) <= atol
    near_image = jnp.abs(boxes - jnp.asarray(orig_box, jnp.float32)) <= atol
    return jnp.any(near_crop & ~near_image, axis=-1)


# --- non-maximum suppression --------------------------------------------------------------------

@jax.jit
def nms(boxes, scores, valid, iou_threshold):
    """Greedy NMS over [K, 4] XYXY boxes -> (order [K] int32, kept [K] bool in that order).

    Boxes are visited by descending score (ties in index order, torchvision's stable sort),
    invalid ones never; a visited box is kept unless an earlier kept box overlaps it with
    IoU > iou_threshold, computed as torchvision does (areas (x1 - x0) * (y1 - y0)).
    The kept indices are order[kept]."""
    k = boxes.shape[0]
    key = jnp.where(valid, -scores.astype(jnp.float32), jnp.inf)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)
    b = boxes.astype(jnp.float32)[order]
    alive = valid[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    pos = jnp.arange(k, dtype=jnp.int32)

    def visit(state):
        i, kept, alive = state
        w = jnp.maximum(jnp.minimum(b[i, 2], b[:, 2]) - jnp.maximum(b[i, 0], b[:, 0]), 0.0)
        h = jnp.maximum(jnp.minimum(b[i, 3], b[:, 3]) - jnp.maximum(b[i, 1], b[:, 1]), 0.0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter)
        alive = alive & ~((iou > iou_threshold) & (pos > i))
        kept = kept.at[i].set(True)
        # Jump straight to the next box nothing has suppressed.
        nxt = jnp.argmax(alive & (pos > i))
        nxt = jnp.where(alive[nxt] & (nxt > i), nxt, k)
        return nxt.astype(jnp.int32), kept, alive

    first = jnp.where(jnp.any(alive), jnp.argmax(alive), k).astype(jnp.int32)
    _, kept, _ = jax.lax.while_loop(lambda s: s[0] < k, visit,
                                    (first, jnp.zeros(k, bool), alive))
    return order, kept
