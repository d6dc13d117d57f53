"""The generator's API: construction (a Model, a path, from_pretrained), clear errors, inputs,
explicit point grids, record types, batch size independence, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from amg_standins import official_amg_standins, official_generator
from PIL import Image

import samv2_jax
from samv2_jax.automatic import SAM2AutomaticMaskGenerator
from samv2_jax.weights.store import save_model

from conftest import converted_pair, sample_image

KW = dict(points_per_side=4, pred_iou_thresh=0.3, stability_score_thresh=0.05,
          mask_threshold=8.0, box_nms_thresh=0.99)


@pytest.fixture(scope="module")
def pair():
    return converted_pair("sam2.1_hiera_tiny", 256)


@pytest.fixture(scope="module")
def image():
    return sample_image(300, 451)


@pytest.fixture(scope="module")
def reference(pair, image):
    return SAM2AutomaticMaskGenerator(pair[1], **KW).generate(image)


def _key(records):
    return [(r["bbox"], r["area"], r["predicted_iou"], r["point_coords"]) for r in records]


def test_exported_with_the_official_defaults(pair):
    assert samv2_jax.SAM2AutomaticMaskGenerator is SAM2AutomaticMaskGenerator
    gen = SAM2AutomaticMaskGenerator(pair[1])
    official = dict(points_per_batch=64, pred_iou_thresh=0.8, stability_score_thresh=0.95,
                    stability_score_offset=1.0, mask_threshold=0.0, box_nms_thresh=0.7,
                    crop_n_layers=0, crop_nms_thresh=0.7, crop_overlap_ratio=512 / 1500,
                    crop_n_points_downscale_factor=1, min_mask_region_area=0,
                    output_mode="binary_mask", use_m2m=False, multimask_output=True)
    for name, value in official.items():
        assert getattr(gen, name) == value, name
    assert len(gen.point_grids) == 1 and gen.point_grids[0].shape == (1024, 2)
    assert isinstance(gen.predictor, samv2_jax.SAM2ImagePredictor)
    assert gen.predictor is gen.predictor and gen.predictor.model is pair[1]


def test_records_types_and_timings(pair, image, reference):
    assert len(reference) >= 3
    for r in reference:
        assert r["segmentation"].shape == image.shape[:2] and r["segmentation"].dtype == bool
        assert r["area"] == int(r["segmentation"].sum())
        x, y, w, h = r["bbox"]
        rows, cols = np.nonzero(r["segmentation"])
        assert [x, y, x + w, y + h] == [cols.min(), rows.min(), cols.max(), rows.max()]
        assert len(r["point_coords"]) == 1 and len(r["point_coords"][0]) == 2
        assert r["crop_box"] == [0.0, 0.0, 451.0, 300.0]
    gen = SAM2AutomaticMaskGenerator(pair[1], output_mode="coco_rle", **KW)
    records = gen.generate(Image.fromarray(image))  # a PIL image works too
    json.dumps(records)
    assert _key(records) == _key(reference)
    assert set(gen.timings) == {"encode", "decode", "total"}
    assert 0 < gen.timings["encode"] + gen.timings["decode"] < gen.timings["total"]


def test_results_do_not_depend_on_the_batch_size(pair, image, reference):
    """16 points in batches of 5 (the last one padded): the same masks; the scores only
    within float32 rounding, as products are blocked differently for another batch size."""
    ours = SAM2AutomaticMaskGenerator(pair[1], **dict(KW, points_per_batch=5)).generate(image)
    assert len(ours) == len(reference)
    for r, t in zip(ours, reference):
        assert r["bbox"] == t["bbox"] and r["point_coords"] == t["point_coords"]
        assert abs(r["predicted_iou"] - t["predicted_iou"]) <= 1e-5
        assert (r["segmentation"] == t["segmentation"]).mean() > 0.999


def test_explicit_point_grids_match_the_official(pair, image):
    torch_model, model = pair
    grid = np.random.default_rng(0).random((23, 2))
    kw = dict(KW, points_per_side=None, point_grids=[grid])
    with official_amg_standins(), torch.no_grad():
        theirs = official_generator(torch_model, **kw).generate(image)
    ours = SAM2AutomaticMaskGenerator(model, **kw).generate(image)
    assert len(ours) == len(theirs) > 0
    for r, t in zip(ours, theirs):
        assert r["bbox"] == t["bbox"] and r["point_coords"] == t["point_coords"]
        assert abs(r["predicted_iou"] - t["predicted_iou"]) <= 1e-4
        assert (r["segmentation"] == t["segmentation"]).mean() > 0.999


def test_a_path_or_from_pretrained(pair, image, reference, tmp_path):
    save_model(pair[1], tmp_path / "model")
    by_path = SAM2AutomaticMaskGenerator(str(tmp_path / "model"), **KW)
    assert by_path.config == pair[1].config
    assert _key(by_path.generate(image)) == _key(reference)
    pretrained = SAM2AutomaticMaskGenerator.from_pretrained(str(tmp_path / "model"),
                                                            image_size=512, **KW)
    assert pretrained.config.image_size == 512  # image_size goes to the model
    assert pretrained.pred_iou_thresh == KW["pred_iou_thresh"]  # the rest to the generator


@pytest.mark.parametrize("kwargs,words", [
    (dict(points_per_side=None), "exactly one of points_per_side"),
    (dict(point_grids=[np.zeros((4, 2))]), "exactly one of points_per_side"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 3))]), r"must be \[N, 2\]"),
    (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1),
     "one per layer"),
    (dict(output_mode="png"), "output_mode"),
    (dict(points_per_batch=0), "points_per_batch"),
    (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2),
     "without points"),
    (dict(crop_n_layers=-1), "crop_n_layers"),
])
def test_bad_arguments(pair, kwargs, words):
    with pytest.raises(ValueError, match=words):
        SAM2AutomaticMaskGenerator(pair[1], **kwargs)


def test_bad_model_and_image(pair):
    with pytest.raises(TypeError, match="samv2_jax Model"):
        SAM2AutomaticMaskGenerator(42)
    gen = SAM2AutomaticMaskGenerator(pair[1], **KW)
    with pytest.raises(TypeError, match="uint8"):
        gen.generate(np.zeros((20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="HWC"):
        gen.generate(np.zeros((2, 20, 20, 3), np.uint8))


def test_importing_the_generator_loads_no_io_module():
    code = ("import sys, samv2_jax; samv2_jax.SAM2AutomaticMaskGenerator;"
            "print(' '.join(m for m in sys.modules if m.startswith(('samv2_jax.io', "
            "'samv2_jax.app'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
