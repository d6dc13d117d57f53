"""The generator's pieces against the official helpers in `sam2.utils.amg` and the stand-ins:
point grids, crop boxes, boxes around masks, the crop-edge test, NMS, stability scores and
the low-resolution stability bound, and the batched prompt decoder."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from amg_standins import batched_nms, official_amg_standins
from sam2.utils import amg

from samv2_jax.automatic import masks as M
from samv2_jax.automatic.cells import stability_and_boxes
from samv2_jax.automatic.decoder import decode_points
from samv2_jax.automatic.grids import (
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
)
from samv2_jax.modeling.transforms import postprocess_masks

import official
from conftest import converted_pair, sample_image


@pytest.mark.parametrize("n", [1, 7, 32])
def test_point_grids(n):
    """(A layer whose grid would have no points is an error; see the generator's tests.)"""
    np.testing.assert_array_equal(build_point_grid(n), amg.build_point_grid(n))
    for layers, scale in [(0, 1), (2, 2), (3, 1)]:
        if n // scale**layers == 0:
            continue
        ours = build_all_layer_point_grids(n, layers, scale)
        theirs = amg.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hw", [(300, 451), (1200, 1800), (777, 513), (64, 64)])
@pytest.mark.parametrize("layers,ratio", [(0, 512 / 1500), (1, 512 / 1500), (2, 0.25)])
def test_crop_boxes(hw, layers, ratio):
    assert generate_crop_boxes(hw, layers, ratio) == amg.generate_crop_boxes(hw, layers, ratio)


def _random_masks(rng, k=12, hw=(37, 53)):
    masks = np.zeros((k, *hw), bool)
    for i in range(k - 2):
        y, x = rng.integers(0, hw[0] - 3), rng.integers(0, hw[1] - 3)
        masks[i, y:y + rng.integers(1, 20), x:x + rng.integers(1, 30)] = True
        masks[i] ^= rng.random(hw) < 0.01
    masks[-1, -1, -1] = True  # one pixel in the corner; masks[-2] stays empty
    return masks


def test_boxes_and_crop_edge():
    rng = np.random.default_rng(0)
    masks = _random_masks(rng)
    ours = np.asarray(M.masks_to_boxes(jnp.asarray(masks)))
    theirs = amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert ours[-2].tolist() == [0, 0, 0, 0]
    boxes = rng.integers(0, 200, (300, 4))
    boxes[:, 2:] += boxes[:, :2]
    for crop in ([0, 0, 250, 180], [100, 40, 300, 260], [30, 0, 330, 400]):
        ours = np.asarray(M.near_crop_edge(jnp.asarray(boxes), crop, [0, 0, 330, 400]))
        theirs = amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop, [0, 0, 330, 400])
        np.testing.assert_array_equal(ours, theirs.numpy())
        assert 0 < ours.sum() < len(ours)


@pytest.mark.parametrize("n,thr", [(1, 0.7), (50, 0.7), (300, 0.3), (300, 0.95)])
def test_nms_matches_torchvision_standin(n, thr):
    rng = np.random.default_rng(n)
    xy = rng.integers(0, 60, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(0, 40, (n, 2))], 1).astype(np.float32)
    boxes[: n // 10] = 0  # empty boxes: IoU 0/0 never suppresses
    scores = (rng.integers(0, 30, n) / 30).astype(np.float32)  # ties
    pad = 64 if n < 64 else 512
    valid = np.arange(pad) < n
    order, kept = M.nms(jnp.asarray(np.pad(boxes, ((0, pad - n), (0, 0)))),
                        jnp.asarray(np.pad(scores, (0, pad - n), constant_values=9.0)),
                        jnp.asarray(valid), thr)
    ours = np.asarray(order)[np.asarray(kept)]
    theirs = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                         torch.zeros(n), thr).numpy()
    np.testing.assert_array_equal(ours, theirs)


def _smooth_logits(rng, k, n=256, scale=12.0):
    """Blob-like logits (what a decoder gives), not white noise."""
    coarse = rng.normal(size=(k, 8, 8)).astype(np.float32) * scale
    return np.asarray(postprocess_masks(jnp.asarray(coarse), (n, n))) + rng.normal(
        size=(k, n, n)).astype(np.float32) * 0.3


@pytest.mark.parametrize("out_hw", [(300, 451), (256, 256), (41, 700), (1100, 1650)])
def test_stability_boxes_and_masks_without_upsampling(out_hw):
    """cells.py against the official scores and boxes on torch's upsampled masks (equal up to
    pixels within float32 rounding of a threshold), and bit for bit against our own full
    upsampling; the low-resolution bound is never below the exact score."""
    rng = np.random.default_rng(1)
    logits = _smooth_logits(rng, 8)
    logits[0] = 5.0  # a constant mask: stability exactly 1
    logits[1] = -5.0  # an empty one: NaN, box zeros
    up_torch = torch.nn.functional.interpolate(torch.from_numpy(logits)[:, None], out_hw,
                                               mode="bilinear", align_corners=False)[:, 0]
    up = np.asarray(postprocess_masks(jnp.asarray(logits), out_hw))
    assert np.abs(up - up_torch.numpy()).max() < 1e-4
    for thr, off in [(0.0, 1.0), (2.0, 0.5), (-1.0, 3.0)]:
        cuts = np.float32([thr, thr + off, thr - off])
        stab, boxes, cells = stability_and_boxes(logits, out_hw, *cuts)
        theirs = amg.calculate_stability_score(up_torch, thr, off).numpy()
        np.testing.assert_allclose(stab, theirs, atol=1e-4)
        assert np.isnan(stab[1]) and np.isnan(theirs[1]) and stab[0] == 1.0
        np.testing.assert_array_equal(boxes, amg.batched_mask_to_box(up_torch > thr).numpy())
        exact = np.asarray(M.stability_scores(jnp.asarray(up), cuts[1], cuts[2]))
        np.testing.assert_array_equal(stab, exact)
        for i in range(len(logits)):
            np.testing.assert_array_equal(cells.mask(i, 2), up[i] > cuts[0])
            x0, y0, x1, y1 = boxes[i]
            np.testing.assert_array_equal(cells.mask(i, 2, boxes[i]),
                                          (up[i] > cuts[0])[y0:y1 + 1, x0:x1 + 1])
        weights = M.cell_weights(256, out_hw)
        assert weights.sum() == out_hw[0] * out_hw[1]
        bound = np.asarray(M.stability_upper_bound(jnp.asarray(logits), weights,
                                                   cuts[1], cuts[2]))
        finite = np.isfinite(exact)
        assert np.all(bound[finite] >= exact[finite]) and bound[0] == 1.0
        # The bound is a useful filter: it rules out masks well below a threshold.
        assert np.mean(bound[finite] - exact[finite]) < 0.15


def test_decode_points_matches_the_official():
    torch_model, model = converted_pair("sam2.1_hiera_tiny", 256)
    cfg = model.config
    image = sample_image(200, 300)
    pred = official.official_image_predictor(torch_model)
    with torch.no_grad():
        pred.set_image(image)
    from samv2_jax.automatic.generator import encode_crop

    feats = encode_crop(model.params, cfg, jnp.asarray(image))
    rng = np.random.default_rng(0)
    coords = (rng.random((6, 1, 2)) * 256).astype(np.float32)
    labels = np.ones((6, 1), np.int32)
    mask_in = (rng.normal(size=(6, 64, 64)) * 8).astype(np.float32)
    # The three ways the generator decodes: the grid with and without multimask output, and
    # the m2m refinement (single mask with a mask prompt).
    for multimask, mask in ((True, None), (False, None), (False, mask_in)):
        low, ious = decode_points(model.params, cfg, feats, jnp.asarray(coords),
                                  jnp.asarray(labels), None if mask is None else jnp.asarray(mask),
                                  multimask_output=multimask)
        with torch.no_grad(), official_amg_standins():
            _, t_ious, t_low = pred._predict(
                torch.from_numpy(coords), torch.from_numpy(labels),
                mask_input=None if mask is None else torch.from_numpy(mask[:, None]),
                multimask_output=multimask, return_logits=True)
        assert low.shape == t_low.shape and ious.shape == t_ious.shape
        assert official.rel_err(ious, t_ious.numpy()) <= 1e-4
        assert official.rel_err(np.clip(low, -32, 32), t_low.numpy()) <= 1e-4
