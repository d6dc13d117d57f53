"""Removing small disconnected regions and holes from full-size masks, in JAX.

Official counterparts: `remove_small_regions` (sam2.utils.amg, OpenCV's connected components)
and `SAM2AutomaticMaskGenerator.postprocess_small_regions`. SAM 2's `generate` does not call
them (its `min_mask_region_area` works at low resolution, through the image predictor's hole
filling and sprinkle removal); the official class keeps the method for SAM 1's post-processing,
and so does ours.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.automatic import masks as M
from samv2_jax.modeling.mask_postprocess import connected_components


def _fill_small_holes(mask, area_thresh):
    """Background components (8-connected) smaller than area_thresh become foreground."""
    labels, areas = connected_components(~mask)
    small = (labels > 0) & (areas < area_thresh)
    return mask | small, jnp.any(small, axis=(-2, -1))


def _drop_small_islands(mask, area_thresh):
    """Foreground components smaller than area_thresh are removed; if all are, the largest is
    kept (the first in raster order among equals, as OpenCV numbers components)."""
    labels, areas = connected_components(mask)
    small = (labels > 0) & (areas < area_thresh)
    changed = jnp.any(small, axis=(-2, -1))
    kept = mask & ~small
    # The largest component: highest area, then the smallest label (its first pixel first).
    big = jnp.iinfo(jnp.int32).max
    flat_a = areas.reshape(*areas.shape[:-2], -1)
    flat_l = jnp.where(flat_a > 0, labels.reshape(flat_a.shape), big)
    best_area = flat_a.max(-1)
    best_label = jnp.where(flat_a == best_area[..., None], flat_l, big).min(-1)
    largest = labels == best_label[..., None, None]
    none_left = ~jnp.any(kept, axis=(-2, -1)) & jnp.any(mask, axis=(-2, -1))
    return jnp.where(none_left[..., None, None], largest, kept), changed


@jax.jit
def remove_small_regions(masks, area_thresh):
    """[N, H, W] bool masks -> (masks without holes and then islands smaller than
    area_thresh, [N] whether anything changed)."""
    masks = jnp.asarray(masks, bool)
    filled, changed_holes = _fill_small_holes(masks, area_thresh)
    cleaned, changed_islands = _drop_small_islands(filled, area_thresh)
    return cleaned, changed_holes | changed_islands


def postprocess_small_regions(mask_data: dict, min_area: int, nms_thresh: float) -> dict:
    """Remove small regions and holes from every mask of `mask_data`, then NMS again with the
    masks that needed no change preferred; returns the surviving entries, in NMS order.

    `mask_data` holds "rles" (uncompressed RLEs, as `uncompressed_rle` records carry them),
    "boxes" ([N, 4] XYXY) and any other per-mask lists or arrays, which are filtered alike;
    changed masks get their new RLE and box.
    """
    from samv2_jax.io import rle

    rles = list(mask_data["rles"])
    if not rles:
        return dict(mask_data)
    masks = np.stack([rle.decode(r) for r in rles])
    cleaned, changed = remove_small_regions(jnp.asarray(masks), jnp.int32(min_area))
    boxes = np.asarray(jax.jit(M.masks_to_boxes)(cleaned))
    scores = (~np.asarray(changed)).astype(np.float32)
    n = len(rles)
    size = max(64, 1 << (n - 1).bit_length())
    order, kept = M.nms(jnp.asarray(np.pad(boxes, ((0, size - n), (0, 0))), jnp.float32),
                        jnp.asarray(np.pad(scores, (0, size - n))),
                        jnp.asarray(np.arange(size) < n), jnp.float32(nms_thresh))
    keep = np.asarray(order)[np.asarray(kept)]
    cleaned = np.asarray(cleaned)
    new_rles, new_boxes = list(rles), np.array(mask_data["boxes"], copy=True)
    for i in keep:
        if scores[i] == 0.0:
            new_rles[i] = rle.encode(cleaned[i])
            new_boxes[i] = boxes[i]
    out = {}
    for key, value in mask_data.items():
        if key == "rles":
            value = new_rles
        elif key == "boxes":
            value = new_boxes
        out[key] = [value[i] for i in keep] if isinstance(value, list) else np.asarray(value)[keep]
    return out
