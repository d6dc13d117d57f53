"""Whole-generator parity with the official `SAM2AutomaticMaskGenerator` (sam2.1 tiny at 256,
every tensor re-drawn, a real photo).

Re-drawn weights give masks scattered over the whole picture, whose boxes nearly all cover
it: at the official thresholds nothing survives and NMS leaves one mask. So the thresholds are
moved until many masks pass every stage: the binarisation threshold up (mask_threshold 8 keeps
the strongest regions), the IoU and stability filters down (they still reject most
candidates), and where the whole image is the only crop, NMS only drops near-duplicates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from amg_standins import official_amg_standins, official_generator

from samv2_jax.automatic import SAM2AutomaticMaskGenerator
from samv2_jax.io import rle

from conftest import converted_pair, sample_image

torch.set_num_threads(2)
MODEL, SIZE = "sam2.1_hiera_tiny", 256
BASE = dict(points_per_side=8, pred_iou_thresh=0.3, stability_score_thresh=0.05,
            mask_threshold=8.0, box_nms_thresh=0.99)
TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    return converted_pair(MODEL, SIZE)


@pytest.fixture(scope="module")
def image():
    return sample_image(300, 451)


def official_records(torch_model, image, **kwargs):
    gen = official_generator(torch_model, **kwargs)
    with official_amg_standins(), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = gen.generate(image)
    # The stand-ins must have run: no "Skipping the post-processing step" from the official.
    assert not [w for w in caught if "Skipping the post-processing" in str(w.message)]
    return out


def as_mask(seg, hw):
    if isinstance(seg, dict):
        return rle.decode(seg)
    assert seg.shape == hw and seg.dtype == bool
    return seg


def assert_same_records(ours, theirs, hw):
    """Same number of masks, matched one to one (mask IoU >= 0.99), scores within TOL, the
    same boxes, points, crops and areas; the order is the official's too (NMS order)."""
    assert len(ours) == len(theirs)
    assert len(ours) > 0
    a = np.stack([as_mask(r["segmentation"], hw) for r in ours]).reshape(len(ours), -1)
    b = np.stack([as_mask(r["segmentation"], hw) for r in theirs]).reshape(len(theirs), -1)
    inter = a.astype(np.float32) @ b.astype(np.float32).T
    iou = inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter)
    match = iou.argmax(1)
    assert sorted(match.tolist()) == list(range(len(theirs)))  # one to one
    assert iou.max(1).min() >= 0.99
    np.testing.assert_array_equal(match, np.arange(len(ours)))
    for r, t in zip(ours, theirs):
        assert set(r) == set(t)
        assert abs(r["predicted_iou"] - t["predicted_iou"]) <= TOL
        assert abs(r["stability_score"] - t["stability_score"]) <= TOL
        assert r["bbox"] == t["bbox"] and r["point_coords"] == t["point_coords"]
        assert r["crop_box"] == t["crop_box"] and r["area"] == t["area"]
        for key in ("area", "predicted_iou", "stability_score"):
            assert type(r[key]) is type(t[key]), key


def test_whole_image_every_output_mode(pair, image):
    """Crops off, use_m2m off; binary masks, uncompressed and COCO RLE."""
    torch_model, model = pair
    theirs = official_records(torch_model, image, **BASE)
    assert len(theirs) >= 5
    gen = SAM2AutomaticMaskGenerator(model, **BASE)
    assert_same_records(gen.generate(image), theirs, image.shape[:2])
    # The official RLE modes encode the very masks its binary mode returns.
    from sam2.utils.amg import coco_encode_rle, mask_to_rle_pytorch

    expected = mask_to_rle_pytorch(torch.from_numpy(
        np.stack([t["segmentation"] for t in theirs])))
    for mode in ("uncompressed_rle", "coco_rle"):
        gen.output_mode = mode
        ours = gen.generate(image)
        assert_same_records(ours, theirs, image.shape[:2])
        for r, e in zip(ours, expected):
            assert r["segmentation"] == (e if mode == "uncompressed_rle" else coco_encode_rle(e))


def test_one_crop_layer(pair, image):
    """crop_n_layers=1: four overlapping crops besides the image, NMS within and across
    crops, the crop-edge filter; COCO RLE from both sides."""
    torch_model, model = pair
    kw = dict(BASE, points_per_side=4, box_nms_thresh=0.7, crop_n_layers=1,
              output_mode="coco_rle")
    theirs = official_records(torch_model, image, **kw)
    assert len({tuple(t["crop_box"]) for t in theirs}) >= 3  # masks from several crops
    ours = SAM2AutomaticMaskGenerator(model, **kw).generate(image)
    assert_same_records(ours, theirs, image.shape[:2])
    for r, t in zip(ours, theirs):
        assert r["segmentation"] == t["segmentation"]


def test_m2m_refinement(pair, image):
    """use_m2m: every mask refined once with its own logits as the mask prompt."""
    torch_model, model = pair
    kw = dict(BASE, points_per_side=4, use_m2m=True, output_mode="uncompressed_rle")
    theirs = official_records(torch_model, image, **kw)
    ours = SAM2AutomaticMaskGenerator(model, **kw).generate(image)
    assert_same_records(ours, theirs, image.shape[:2])
    for r, t in zip(ours, theirs):
        assert r["segmentation"] == t["segmentation"]


def test_small_regions_and_single_mask_output(pair, image):
    """min_mask_region_area > 0 (holes filled and sprinkles removed at low resolution, the
    official predictor's connected components given by the stand-in) with one mask per
    point. Without the clean-up the official result differs, so it really ran."""
    torch_model, model = pair
    kw = dict(BASE, min_mask_region_area=25, multimask_output=False)
    theirs = official_records(torch_model, image, **kw)
    ours = SAM2AutomaticMaskGenerator(model, **kw).generate(image)
    assert_same_records(ours, theirs, image.shape[:2])
    plain = official_records(torch_model, image, **dict(kw, min_mask_region_area=0))
    key = lambda recs: [(tuple(r["bbox"]), r["area"]) for r in recs]
    assert key(plain) != key(theirs)
