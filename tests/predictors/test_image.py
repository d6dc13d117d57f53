"""Whole-prediction parity with the official SAM2ImagePredictor, for all eight models."""

import numpy as np
import pytest
import torch

from samv2_jax import SAM2ImagePredictor

import official
from conftest import converted_pair, sample_image

# Big models at reduced resolution, one small model at the full 1024.
CASES = [
    ("sam2.1_hiera_tiny", 1024),
    ("sam2_hiera_tiny", 512),
    ("sam2.1_hiera_small", 512),
    ("sam2_hiera_small", 256),
    ("sam2.1_hiera_base_plus", 256),
    ("sam2_hiera_base_plus", 512),
    ("sam2.1_hiera_large", 256),
    ("sam2_hiera_large", 256),
]
TOL = 1e-4


def _scenarios(h, w):
    """Prompt sets covering points, boxes, both, batches and multimask on/off."""
    pts = np.array([[0.45 * w, 0.40 * h], [0.70 * w, 0.65 * h], [0.20 * w, 0.80 * h]])
    box = np.array([0.15 * w, 0.20 * h, 0.75 * w, 0.85 * h])
    return {
        "one point, multimask": dict(point_coords=pts[:1], point_labels=np.array([1])),
        "two points, single mask": dict(point_coords=pts[:2], point_labels=np.array([1, 0]),
                                        multimask_output=False),
        "box": dict(box=box, multimask_output=False),
        "box + points": dict(box=box, point_coords=pts[1:], point_labels=np.array([1, 0]),
                             multimask_output=False),
        "logits": dict(point_coords=pts, point_labels=np.array([1, 1, 0]), return_logits=True),
        "batch of point sets": dict(point_coords=np.stack([pts[:2], pts[1:]]),
                                    point_labels=np.array([[1, 0], [1, 1]]),
                                    return_logits=True),
        "batch of boxes": dict(box=np.stack([box, box * 0.8]), multimask_output=False,
                               return_logits=True),
        "normalized coords": dict(point_coords=np.array([[0.3, 0.6]]), point_labels=[1],
                                  normalize_coords=False, return_logits=True),
    }


def assert_same_prediction(ours, theirs, what, binary):
    masks, ious, low = ours
    t_masks, t_ious, t_low = theirs
    assert masks.shape == t_masks.shape and masks.dtype == t_masks.dtype, what
    assert ious.shape == t_ious.shape and low.shape == t_low.shape, what
    assert official.rel_err(ious, t_ious) <= TOL, (what, official.rel_err(ious, t_ious))
    assert official.rel_err(low, t_low) <= TOL, (what, official.rel_err(low, t_low))
    if not binary:  # binary masks are compared by the caller, against the logits
        assert official.rel_err(masks, t_masks) <= TOL, (what, official.rel_err(masks, t_masks))


def _official_logits(pred, kwargs):
    kw = dict(kwargs, return_logits=True)
    return pred.predict(**kw)[0]


@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}@{s}" for n, s in CASES])
def test_predict_matches_official(name, size):
    torch_model, model = converted_pair(name, size)
    theirs = official.official_image_predictor(torch_model)
    ours = SAM2ImagePredictor(model)
    h, w = 300, 451  # not square, not a multiple of anything
    image = sample_image(h, w)
    with torch.no_grad():
        theirs.set_image(image)
    ours.set_image(image)
    emb = ours.get_image_embedding()
    assert emb.shape == tuple(theirs.get_image_embedding().shape)
    assert official.rel_err(emb, theirs.get_image_embedding().numpy()) <= TOL

    prev_low = None
    for what, kwargs in _scenarios(h, w).items():
        with torch.no_grad():
            t_out = theirs.predict(**kwargs)
        o_out = ours.predict(**kwargs)
        binary = not kwargs.get("return_logits", False)
        if binary:
            # Masks thresholded from logits that agree to TOL may differ only at pixels whose
            # official logit is within that tolerance of 0.
            with torch.no_grad():
                t_logits = _official_logits(theirs, kwargs)
            band = np.abs(t_logits) <= TOL * np.abs(t_logits).max()
            agree = (o_out[0] == t_out[0]) | band
            assert agree.all(), (what, int((~agree).sum()))
        assert_same_prediction(o_out, t_out, what, binary)
        if what == "one point, multimask":
            prev_low = t_out[2][np.argmax(t_out[1])][None]

    # A mask prompt (the previous low-res logits) with a refining click.
    kwargs = dict(point_coords=np.array([[0.5 * w, 0.5 * h]]), point_labels=np.array([1]),
                  mask_input=prev_low, multimask_output=False, return_logits=True)
    with torch.no_grad():
        t_out = theirs.predict(**kwargs)
    assert_same_prediction(ours.predict(**kwargs), t_out, "mask input", binary=False)


def test_predict_batch_matches_official():
    torch_model, model = converted_pair("sam2.1_hiera_tiny", 256)
    theirs = official.official_image_predictor(torch_model)
    ours = SAM2ImagePredictor(model)
    images = [sample_image(200, 300), sample_image(320, 240, seed=1)]
    with torch.no_grad():
        theirs.set_image_batch(images)
    ours.set_image_batch(images)
    assert official.rel_err(ours.get_image_embedding(),
                            theirs.get_image_embedding().numpy()) <= TOL
    kwargs = dict(point_coords_batch=[np.array([[100, 80]]), np.array([[60, 200], [150, 30]])],
                  point_labels_batch=[np.array([1]), np.array([1, 0])],
                  multimask_output=True, return_logits=True)
    with torch.no_grad():
        t_masks, t_ious, t_low = theirs.predict_batch(**kwargs)
    masks, ious, low = ours.predict_batch(**kwargs)
    assert len(masks) == len(t_masks) == 2
    for i in range(2):
        assert_same_prediction((masks[i], ious[i], low[i]), (t_masks[i], t_ious[i], t_low[i]),
                               f"image {i}", binary=False)


def test_no_prompt_matches_official():
    """No points, box or mask: the decoder still runs on its output tokens alone."""
    torch_model, model = converted_pair("sam2.1_hiera_tiny", 256)
    theirs = official.official_image_predictor(torch_model)
    ours = SAM2ImagePredictor(model)
    image = sample_image(128, 128)
    with torch.no_grad():
        theirs.set_image(image)
        t_out = theirs.predict(return_logits=True)
    ours.set_image(image)
    assert_same_prediction(ours.predict(return_logits=True), t_out, "no prompt", binary=False)
