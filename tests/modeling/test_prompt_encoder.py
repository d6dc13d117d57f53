"""Prompt encoder parity with the official `sam_prompt_encoder`: points with every label
(-1 padding, 0 negative, 1 positive, 2/3 box corners), with and without the padding point the
official appends when no box is given, boxes, points + boxes, mask prompts, nothing at all,
batches; and the dense positional encoding of the embedding grid."""

import numpy as np
import pytest
import torch

from samv2_jax.modeling.prompt_encoder import dense_pe, prompt_encoder

import official
from conftest import converted_pair

TOL = 1e-4
NAME, SIZE = "sam2.1_hiera_tiny", 256


def _pair():
    torch_model, model = converted_pair(NAME, SIZE)
    return torch_model.sam_prompt_encoder, model.params["sam_prompt_encoder"], model.config


def _run_both(points=None, boxes=None, masks=None):
    """-> ((sparse, dense) ours NHWC, (sparse, dense) official transposed to NHWC)."""
    enc, p, cfg = _pair()
    t_points = None
    if points is not None:
        t_points = (torch.from_numpy(points[0]), torch.from_numpy(points[1]))
    with torch.no_grad():
        t_sparse, t_dense = enc(
            points=t_points,
            boxes=None if boxes is None else torch.from_numpy(boxes),
            masks=None if masks is None else torch.from_numpy(masks[:, None]))
    sparse, dense = prompt_encoder(p, cfg, points=points, boxes=boxes, masks=masks)
    return (np.asarray(sparse), np.asarray(dense)), (t_sparse.detach().numpy(),
                                                    t_dense.detach().numpy().transpose(0, 2, 3, 1))


def _assert_same(ours, theirs, what):
    for part, o, t in zip(("sparse", "dense"), ours, theirs):
        assert o.shape == t.shape, (what, part, o.shape, t.shape)
        if o.size:
            err = official.rel_err(o, t)
            assert err <= TOL, (what, part, err)


def _points(b, n, seed):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, SIZE, (b, n, 2)).astype(np.float32)
    return coords


ALL_LABELS = np.array([-1, 0, 1, 2, 3], np.int32)


@pytest.mark.parametrize("with_box", [False, True], ids=["padded", "with box"])
@pytest.mark.parametrize("batch", [1, 3])
def test_points_with_every_label(with_box, batch):
    coords = _points(batch, 5, seed=batch)
    labels = np.stack([np.roll(ALL_LABELS, i) for i in range(batch)]).astype(np.int32)
    boxes = None
    if with_box:
        rng = np.random.default_rng(10 + batch)
        xy0 = rng.uniform(0, SIZE / 2, (batch, 2))
        boxes = np.concatenate([xy0, xy0 + rng.uniform(10, SIZE / 2, (batch, 2))], 1)
        boxes = boxes.astype(np.float32)
    ours, theirs = _run_both(points=(coords, labels), boxes=boxes)
    # 5 points, then either the padding point or the two box corners.
    assert ours[0].shape == (batch, 5 + (2 if with_box else 1), 256)
    assert ours[1].shape == (batch, SIZE // 16, SIZE // 16, 256)
    _assert_same(ours, theirs, f"labels, box={with_box}, batch={batch}")


def test_each_label_has_its_own_embedding():
    """Same coordinates, different labels: five different tokens (and label -1 ignores the
    coordinates), so the comparison above would catch a swapped label."""
    coords = np.full((1, 5, 2), 100.0, np.float32)
    ours, theirs = _run_both(points=(coords, ALL_LABELS[None]))
    _assert_same(ours, theirs, "same coords")
    tokens = ours[0][0, :5]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.allclose(tokens[i], tokens[j], atol=1e-3), (i, j)
    moved = coords + 37.0
    ours2, _ = _run_both(points=(moved, ALL_LABELS[None]))
    np.testing.assert_allclose(ours2[0][0, 0], tokens[0], rtol=0, atol=1e-6)  # padding label
    assert not np.allclose(ours2[0][0, 1:5], tokens[1:5], atol=1e-3)


@pytest.mark.parametrize("batch", [1, 4])
def test_boxes_alone(batch):
    rng = np.random.default_rng(batch)
    boxes = np.sort(rng.uniform(0, SIZE, (batch, 2, 2)), axis=1).reshape(batch, 4)
    boxes = boxes.astype(np.float32)
    ours, theirs = _run_both(boxes=boxes)
    assert ours[0].shape == (batch, 2, 256)
    _assert_same(ours, theirs, "boxes")


def test_box_as_labelled_points_equals_box():
    """The predictor passes a box as two points labelled 2 and 3 (no padding point when
    points follow); as tokens that matches the official box embedding."""
    box = np.array([[20.0, 30.0, 200.0, 150.0]], np.float32)
    ours_box, _ = _run_both(boxes=box)
    corners = box.reshape(1, 2, 2)
    pts = np.concatenate([corners, np.array([[[90.0, 80.0]]], np.float32)], axis=1)
    ours_pts, theirs_pts = _run_both(points=(pts, np.array([[2, 3, 1]], np.int32)))
    _assert_same(ours_pts, theirs_pts, "box as points")
    np.testing.assert_allclose(ours_pts[0][:, :2], ours_box[0], atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_points_and_boxes(batch):
    coords = _points(batch, 3, seed=20 + batch)
    labels = np.tile(np.array([[1, 0, 1]], np.int32), (batch, 1))
    boxes = np.tile(np.array([[10.0, 40.0, 180.0, 230.0]], np.float32), (batch, 1))
    boxes[-1] += 5.0
    ours, theirs = _run_both(points=(coords, labels), boxes=boxes)
    assert ours[0].shape == (batch, 5, 256)
    _assert_same(ours, theirs, "points + boxes")


@pytest.mark.parametrize("batch", [1, 3])
def test_masks(batch):
    rng = np.random.default_rng(30 + batch)
    side = 4 * (SIZE // 16)
    masks = (8.0 * rng.standard_normal((batch, side, side))).astype(np.float32)
    ours, theirs = _run_both(masks=masks)
    assert ours[0].shape == (batch, 0, 256)
    assert ours[1].shape == (batch, SIZE // 16, SIZE // 16, 256)
    _assert_same(ours, theirs, "masks")
    # The mask embedding really depends on the mask.
    if batch > 1:
        assert official.rel_err(ours[1][0], ours[1][1]) > 1e-2


def test_masks_with_points():
    rng = np.random.default_rng(40)
    side = 4 * (SIZE // 16)
    masks = (5.0 * rng.standard_normal((2, side, side))).astype(np.float32)
    coords = _points(2, 2, seed=41)
    labels = np.array([[1, 0], [0, 1]], np.int32)
    ours, theirs = _run_both(points=(coords, labels), masks=masks)
    _assert_same(ours, theirs, "masks + points")


def test_nothing():
    ours, theirs = _run_both()
    assert ours[0].shape == (1, 0, 256)
    assert ours[1].shape == (1, SIZE // 16, SIZE // 16, 256)
    _assert_same(ours, theirs, "nothing")
    # The dense embedding is the learned no-mask vector everywhere.
    enc, _, _ = _pair()
    np.testing.assert_allclose(ours[1][0, 3, 5], enc.no_mask_embed.weight[0].detach().numpy(),
                               atol=1e-6)


def test_dense_pe_matches_official():
    enc, p, cfg = _pair()
    with torch.no_grad():
        theirs = enc.get_dense_pe().numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(dense_pe(p, cfg))
    assert ours.shape == theirs.shape == (1, SIZE // 16, SIZE // 16, 256)
    assert official.rel_err(ours, theirs) <= TOL
