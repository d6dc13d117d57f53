"""postprocess_small_regions (holes and islands removed from full-size masks, then NMS)
against the official static method running on the OpenCV stand-in."""

from __future__ import annotations

import numpy as np
import torch
from amg_standins import official_amg_standins

from samv2_jax.automatic import SAM2AutomaticMaskGenerator
from samv2_jax.automatic.small_regions import remove_small_regions
from samv2_jax.io import rle


def _masks(rng, n=10, hw=(48, 64)):
    masks = np.zeros((n, *hw), bool)
    for i in range(n):
        y, x = rng.integers(0, 20), rng.integers(0, 30)
        masks[i, y:y + rng.integers(10, 28), x:x + rng.integers(10, 34)] = True
        masks[i] ^= rng.random(hw) < 0.02  # pin holes and specks
        if i % 3 == 0:  # a hole of 9 pixels and an island of 6
            masks[i, y + 3:y + 6, x + 3:x + 6] = False
            masks[i, 40:42, 55:58] = True
    masks[-1] = False
    masks[-1, 5:7, 5:7] = masks[-1, 20:22, 30:33] = True  # only small islands: keep largest
    masks[-2] = masks[0]  # a duplicate for NMS
    return masks


def test_matches_the_official_static_method():
    from sam2.utils.amg import MaskData, batched_mask_to_box

    with official_amg_standins():
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Official

    masks = _masks(np.random.default_rng(0))
    rles = [rle.encode(m) for m in masks]
    boxes = batched_mask_to_box(torch.from_numpy(masks)).numpy().astype(np.float32)
    ious = np.linspace(0.9, 0.5, len(masks)).astype(np.float32)
    for min_area in (5, 8, 12):
        theirs = MaskData(rles=[dict(r) for r in rles], boxes=boxes.copy(), iou_preds=ious)
        with official_amg_standins():
            theirs = Official.postprocess_small_regions(theirs, min_area, 0.7)
        ours = SAM2AutomaticMaskGenerator.postprocess_small_regions(
            {"rles": list(rles), "boxes": boxes.copy(), "iou_preds": ious}, min_area, 0.7)
        assert ours["rles"] == theirs["rles"]
        np.testing.assert_array_equal(ours["boxes"], theirs["boxes"])
        np.testing.assert_array_equal(ours["iou_preds"], theirs["iou_preds"])
        assert len(ours["rles"]) < len(masks)  # the duplicate went


def test_remove_small_regions_flags_changes():
    masks = _masks(np.random.default_rng(1), n=4)
    masks[1] = False
    masks[1, 10:30, 10:30] = True  # clean: nothing to change
    cleaned, changed = remove_small_regions(masks, 8)
    cleaned, changed = np.asarray(cleaned), np.asarray(changed)
    assert not changed[1] and (cleaned[1] == masks[1]).all()
    assert changed[0] and cleaned[0].sum() != masks[0].sum()
    assert not remove_small_regions(np.zeros((1, 5, 5), bool), 8)[1][0]
