"""Mask post-processing in pure JAX: 8-connected component labelling and the
hole-filling / sprinkle-removal steps SAM 2 applies to low-resolution mask logits, and the
non-overlap constraint and upsampling of the video predictor's outputs.
Everything here traces under jax.jit and runs on any backend without host callbacks.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from samv2_jax.modeling.transforms import resize_bilinear

__all__ = ["connected_components", "fill_holes_and_remove_sprinkles", "fill_holes",
           "apply_non_overlapping_constraints", "to_video_res"]

# Pointer-jumping rounds per outer iteration: each one halves tree depth, so a few
# are enough to flatten what one hooking round can deepen.
_JUMPS_PER_ROUND = 2


def _box_min_3x3(x: jax.Array, big: int) -> jax.Array:
    """Minimum over each pixel's 3x3 neighbourhood of a [B, H, W] array.

    Separable (rows then columns) because for a box window min is separable and the
    diagonal neighbours are then covered without the orthogonal ones being foreground.
    """
    pad = jnp.full_like(x[:, :, :1], big)
    x = jnp.minimum(x, jnp.minimum(jnp.concatenate([pad, x[:, :, :-1]], 2),
                                   jnp.concatenate([x[:, :, 1:], pad], 2)))
    pad = jnp.full_like(x[:, :1, :], big)
    return jnp.minimum(x, jnp.minimum(jnp.concatenate([pad, x[:, :-1, :]], 1),
                                      jnp.concatenate([x[:, 1:, :], pad], 1)))


def _label_forest(fg: jax.Array) -> jax.Array:
    """Root index (global flat index into fg) of every pixel's component; fg is [B, H, W].

    Every pixel keeps a pointer to a pixel of its own component with a smaller or equal
    flat index, so the pointers form a forest whose roots point at themselves. Each round
    takes the min pointer over the 8 neighbours, also hooks the old parent onto that smaller
    pointer (so whole trees merge at once, as in Shiloach-Vishkin, instead of a label
    creeping one pixel per round along a snake), then shortcuts with pointer jumping.
    Pointers only ever decrease, so iterating until nothing changes terminates, and the
    fixed point has one label per component whatever its shape.
    """
    b, h, w = fg.shape
    n = b * h * w
    big = jnp.iinfo(jnp.int32).max
    idx = jnp.arange(n, dtype=jnp.int32).reshape(b, h, w)

    # Seed every pixel with the start of its horizontal run: one cheap scan that
    # already collapses each row segment, which cuts the rounds needed for blobs.
    col = jnp.arange(w, dtype=jnp.int32)
    run_start = lax.cummax(jnp.where(fg, 0, col + 1), axis=2)
    parent = jnp.where(fg, idx - idx % w + run_start, idx).ravel()
    fg_flat = fg.ravel()

    def jump(p):
        return p[p]

    def one_round(state):
        parent, _ = state
        old = parent
        # Background keeps pointing at itself but must never be picked as a neighbour.
        visible = jnp.where(fg, parent.reshape(b, h, w), big)
        nbr_min = jnp.where(fg_flat, _box_min_3x3(visible, big).ravel(), parent)
        # Also lower the pointer's target, so the whole tree behind it follows at once.
        parent = parent.at[parent].min(nbr_min, mode="promise_in_bounds")
        parent = jnp.minimum(parent, nbr_min)
        for _ in range(_JUMPS_PER_ROUND):
            parent = jump(parent)
        return parent, jnp.any(parent != old)

    parent, _ = lax.while_loop(lambda s: s[1], one_round, (parent, jnp.bool_(True)))
    return parent.reshape(b, h, w)


def connected_components(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """8-connected components of a boolean mask of shape [..., H, W].

    Returns (labels, areas), both int32 with the mask's shape. A foreground pixel's label
    is 1 + the row-major flat index (within its own image) of the smallest-index pixel of
    its component, and its area is that component's pixel count; background gets 0 in
    both. Leading dimensions are independent images.
    """
    mask = jnp.asarray(mask).astype(bool)
    if mask.ndim < 2:
        raise ValueError(f"mask must have shape [..., H, W], got {mask.shape}")
    shape = mask.shape
    h, w = shape[-2:]
    b = math.prod(shape[:-2])
    if b * h * w == 0:
        zeros = jnp.zeros(shape, jnp.int32)
        return zeros, zeros
    if b * h * w >= 2**31:
        raise ValueError("mask too large for int32 pixel indices")

    fg = mask.reshape(b, h, w)
    root = _label_forest(fg)
    areas = jax.ops.segment_sum(fg.ravel().astype(jnp.int32), root.ravel(),
                                num_segments=b * h * w, indices_are_sorted=False)
    areas = jnp.where(fg, areas[root], 0)
    image_offset = (jnp.arange(b, dtype=jnp.int32) * (h * w))[:, None, None]
    labels = jnp.where(fg, root - image_offset + 1, 0)
    return labels.reshape(shape), areas.reshape(shape)


def _small_components(mask: jax.Array, max_area: float) -> jax.Array:
    labels, areas = connected_components(mask)
    return (labels > 0) & (areas <= max_area)


@functools.partial(jax.jit, static_argnames=("mask_threshold", "max_hole_area",
                                             "max_sprinkle_area"))
def fill_holes_and_remove_sprinkles(mask_logits: jax.Array, mask_threshold: float = 0.0,
                                    max_hole_area: float = 0.0,
                                    max_sprinkle_area: float = 0.0) -> jax.Array:
    """SAM 2's mask clean-up on logits [..., H, W] (done before upsampling to image size).

    Background components (logits <= threshold) of area <= max_hole_area become
    threshold + 10; then foreground components of the *input* logits (> threshold) of
    area <= max_sprinkle_area become threshold - 10. Any background component counts as
    a hole, border-touching or not, as in the reference. A step with a non-positive area
    limit is skipped. Returns float32 like the reference.
    """
    logits = jnp.asarray(mask_logits, jnp.float32)
    out = logits
    if max_hole_area > 0:
        hole = _small_components(logits <= mask_threshold, max_hole_area)
        out = jnp.where(hole, jnp.float32(mask_threshold + 10.0), out)
    if max_sprinkle_area > 0:
        # Deliberately on the original logits: a filled hole must not merge sprinkles.
        sprinkle = _small_components(logits > mask_threshold, max_sprinkle_area)
        out = jnp.where(sprinkle, jnp.float32(mask_threshold - 10.0), out)
    return out


@functools.partial(jax.jit, static_argnames=("max_area",))
def fill_holes(mask_logits: jax.Array, max_area: float) -> jax.Array:
    """Turn background components (logits <= 0) of area <= max_area into foreground.

    Filled pixels get 0.1, just above the decision boundary, so they flip to foreground
    without claiming high confidence. Keeps a float input dtype (others become float32);
    max_area must be positive.
    """
    if not max_area > 0:
        raise ValueError(f"max_area must be positive, got {max_area}")
    if not jnp.issubdtype(mask_logits.dtype, jnp.floating):
        mask_logits = mask_logits.astype(jnp.float32)
    hole = _small_components(mask_logits <= 0, max_area)
    return jnp.where(hole, jnp.asarray(0.1, mask_logits.dtype), mask_logits)


# Where non-overlapping masks push the pixels an object loses (official: clamp to -10).
_LOSER_MAX_LOGIT = -10.0


def apply_non_overlapping_constraints(masks):
    """[O, 1, H, W] logits: each pixel kept for the highest-scoring object, the others drop to
    at most -10 (official `SAM2Base._apply_non_overlapping_constraints`)."""
    if masks.shape[0] == 1:
        return masks
    winner = jnp.argmax(masks, axis=0, keepdims=True)
    keep = winner == jnp.arange(masks.shape[0]).reshape(-1, 1, 1, 1)
    return jnp.where(keep, masks, jnp.minimum(masks, _LOSER_MAX_LOGIT))


@functools.partial(jax.jit, static_argnames=("video_hw", "non_overlap"))
def to_video_res(pred_masks, video_hw: tuple[int, int], non_overlap: bool):
    """[O, 1, h, w] logits -> [O, 1, H, W] at the video's size, bilinearly (and one object
    per pixel with `non_overlap`), as the official predictor returns them."""
    masks = pred_masks
    if masks.shape[-2:] != video_hw:
        masks = resize_bilinear(masks[:, 0, :, :, None], video_hw)[..., 0][:, None]
    if non_overlap:
        masks = apply_non_overlapping_constraints(masks)
    return masks
