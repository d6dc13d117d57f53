"""SAM2ImagePredictor at its edges: bad input gives a clear error, other image formats give the
same masks as the RGB image they stand for, output dtypes / shapes / clamping follow the
official predictor, and the hole / sprinkle post-processing matches an independent reference.

The official predictor silently skips `max_hole_area` / `max_sprinkle_area` without its CUDA
extension, so those are checked against scipy (8-connected components) plus torch's bilinear
upsampling, following the official `SAM2Transforms.postprocess_masks` semantics.
"""

import copy
import functools

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from PIL import Image

from samv2_jax import SAM2ImagePredictor
from samv2_jax.weights.layout import flatten, unflatten
from samv2_jax.weights.store import Model

import official
from conftest import converted_pair, sample_image

NAME, SIZE = "sam2.1_hiera_tiny", 256
H, W = 200, 300
TOL = 1e-4
LOW = 4 * (SIZE // 16)  # low-res mask side


@functools.lru_cache(maxsize=1)
def _image():
    return sample_image(H, W)


@pytest.fixture(scope="module")
def model():
    return converted_pair(NAME, SIZE)[1]


@pytest.fixture(scope="module")
def predictor(model):
    pred = SAM2ImagePredictor(model)
    pred.set_image(_image())
    return pred


POINT = dict(point_coords=np.array([[150.0, 100.0]]), point_labels=np.array([1]))


# --- bad input ---------------------------------------------------------------------------------


def test_predict_before_set_image(model):
    pred = SAM2ImagePredictor(model)
    with pytest.raises(RuntimeError, match=r"set_image"):
        pred.predict(**POINT)
    with pytest.raises(RuntimeError, match=r"set_image"):
        pred.get_image_embedding()


def test_predict_batch_without_set_image_batch(model, predictor):
    with pytest.raises(RuntimeError, match=r"set_image_batch"):
        SAM2ImagePredictor(model).predict_batch(point_coords_batch=[POINT["point_coords"]],
                                                point_labels_batch=[POINT["point_labels"]])
    # A single image set with set_image is not a batch either.
    with pytest.raises(RuntimeError, match=r"set_image_batch"):
        predictor.predict_batch(point_coords_batch=[POINT["point_coords"]],
                                point_labels_batch=[POINT["point_labels"]])


BAD_IMAGES = {
    "float image": (lambda im: im.astype(np.float32) / 255, TypeError, r"uint8"),
    "CHW image": (lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)), ValueError,
                  r"(?i)channels-first|CHW"),
    "2-channel image": (lambda im: np.ascontiguousarray(im[:, :, :2]), ValueError,
                        r"2 channels"),
    "string path": (lambda im: "/some/picture.jpg", TypeError, r"path"),
    "empty image": (lambda im: np.zeros((0, 0, 3), np.uint8), ValueError, r"empty"),
    "empty width": (lambda im: np.zeros((10, 0, 3), np.uint8), ValueError, r"empty"),
    "batch of images": (lambda im: im[None], ValueError, r"one image at a time"),
    "a list": (lambda im: im.tolist(), TypeError, r"numpy array"),
}


@pytest.mark.parametrize("what", list(BAD_IMAGES))
def test_bad_image(model, what):
    make, exc, pattern = BAD_IMAGES[what]
    pred = SAM2ImagePredictor(model)
    with pytest.raises(exc, match=pattern):
        pred.set_image(make(_image()))
    with pytest.raises(exc, match=pattern):
        pred.set_image_batch([_image(), make(_image())])


BAD_PROMPTS = {
    "point_coords without labels": (dict(point_coords=[[10.0, 20.0]]), r"point_labels"),
    "labels without coords": (dict(point_labels=[1]), r"without point_coords"),
    "points and labels of different lengths": (
        dict(point_coords=[[10.0, 20.0], [30.0, 40.0]], point_labels=[1]), r"one label per point"),
    "unknown label": (dict(point_coords=[[10.0, 20.0]], point_labels=[5]), r"unknown point label"),
    "fractional label": (dict(point_coords=[[10.0, 20.0]], point_labels=[0.5]), r"integers"),
    "coords not Nx2": (dict(point_coords=[[10.0, 20.0, 30.0]], point_labels=[1]), r"Nx2"),
    "box with 3 numbers": (dict(box=[10.0, 20.0, 30.0]), r"box must be 4 numbers"),
    "boxes and point sets of different counts": (
        dict(box=[[1.0, 2.0, 30.0, 40.0], [5.0, 6.0, 70.0, 80.0]], **POINT), r"box"),
    "mask_input of the wrong size": (dict(mask_input=np.zeros((1, LOW // 2, LOW // 2))),
                                     rf"mask_input must be 1x{LOW}x{LOW}"),
    "NaN coordinates": (dict(point_coords=[[np.nan, 20.0]], point_labels=[1]), r"NaN"),
    "infinite coordinates": (dict(point_coords=[[10.0, np.inf]], point_labels=[1]), r"infinity"),
    "NaN box": (dict(box=[np.nan, 2.0, 30.0, 40.0]), r"NaN"),
}


@pytest.mark.parametrize("what", list(BAD_PROMPTS))
def test_bad_prompt(predictor, what):
    kwargs, pattern = BAD_PROMPTS[what]
    with pytest.raises(ValueError, match=pattern):
        predictor.predict(**kwargs)


def test_non_model_is_rejected():
    torch_model, _ = converted_pair(NAME, SIZE)
    for bad in (torch_model, "sam2.1_hiera_tiny", {"config": 1}):
        with pytest.raises(TypeError, match=r"samv2_jax Model"):
            SAM2ImagePredictor(bad)


# --- other image formats -----------------------------------------------------------------------


def _predict_all(pred, image):
    pred.set_image(image)
    out = pred.predict(**POINT, return_logits=True)
    return (pred.get_image_embedding(),) + out


EQUIVALENT_IMAGES = {
    # name: (what is passed, the RGB image it stands for)
    "grayscale HxW": (lambda rgb: rgb[:, :, 1].copy(),
                      lambda rgb: np.repeat(rgb[:, :, 1:2], 3, axis=2)),
    "grayscale HxWx1": (lambda rgb: rgb[:, :, 1:2].copy(),
                        lambda rgb: np.repeat(rgb[:, :, 1:2], 3, axis=2)),
    "RGBA": (lambda rgb: np.concatenate([rgb, np.full((H, W, 1), 77, np.uint8)], axis=2),
             lambda rgb: rgb),
    "PIL RGB": (lambda rgb: Image.fromarray(rgb), lambda rgb: rgb),
    "PIL L": (lambda rgb: Image.fromarray(rgb[:, :, 0].copy()),
              lambda rgb: np.repeat(rgb[:, :, :1], 3, axis=2)),
    "PIL RGBA": (lambda rgb: Image.fromarray(
        np.concatenate([rgb, np.full((H, W, 1), 200, np.uint8)], axis=2)), lambda rgb: rgb),
}


@pytest.mark.parametrize("what", list(EQUIVALENT_IMAGES))
def test_other_image_formats_equal_rgb(model, what):
    make, equivalent = EQUIVALENT_IMAGES[what]
    rgb = _image()
    pred = SAM2ImagePredictor(model)
    ours = _predict_all(pred, make(rgb))
    expected = _predict_all(pred, equivalent(rgb))
    for a, b in zip(ours, expected):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    if what.startswith("gray") or what == "PIL L":  # not trivially the colour image
        assert not np.array_equal(expected[3], _predict_all(pred, rgb)[3])


# --- outputs -----------------------------------------------------------------------------------


def test_output_dtypes_and_shapes_like_official(predictor):
    torch_model, _ = converted_pair(NAME, SIZE)
    theirs = official.official_image_predictor(torch_model)
    with torch.no_grad():
        theirs.set_image(_image())
    for kwargs in (dict(POINT), dict(POINT, multimask_output=False),
                   dict(box=np.array([[20.0, 30.0, 200.0, 150.0], [0.0, 0.0, 100.0, 100.0]]))):
        with torch.no_grad():
            t_masks, t_ious, t_low = theirs.predict(**kwargs)
        masks, ious, low = predictor.predict(**kwargs)
        for o, t in ((masks, t_masks), (ious, t_ious), (low, t_low)):
            assert o.shape == t.shape and o.dtype == t.dtype, (kwargs, o.shape, t.shape)
        assert masks.dtype == np.float32 and ious.dtype == np.float32 and low.dtype == np.float32
        assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
        assert masks.shape[-2:] == (H, W) and low.shape[-2:] == (LOW, LOW)
        assert np.abs(low).max() <= 32.0


def _scaled_hypernetworks(factor):
    """(official model, our Model) whose mask logits are `factor` times larger, so that the
    low-res logits exceed the official clamp of 32."""
    torch_model, model = converted_pair(NAME, SIZE)
    t = copy.deepcopy(torch_model)
    with torch.no_grad():
        for mlp in t.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(factor)
            mlp.layers[-1].bias.mul_(factor)
    flat = dict(flatten(model.params))
    n = 0
    for key in list(flat):
        if key.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in key:
            flat[key] = flat[key] * factor
            n += 1
    assert n == 2 * len(t.sam_mask_decoder.output_hypernetworks_mlps)
    return t, Model(config=model.config, params=unflatten(flat))


def test_low_res_logits_are_clamped_like_official():
    t_model, model = _scaled_hypernetworks(10.0)
    theirs = official.official_image_predictor(t_model)
    ours = SAM2ImagePredictor(model)
    with torch.no_grad():
        theirs.set_image(_image())
        t_masks, t_ious, t_low = theirs.predict(**POINT, return_logits=True)
    ours.set_image(_image())
    masks, ious, low = ours.predict(**POINT, return_logits=True)
    # The clamp is really hit, and only the low-res output is clamped (as in the official).
    assert low.max() == 32.0 and low.min() == -32.0
    assert np.abs(masks).max() > 32.0
    assert official.rel_err(low, t_low) <= TOL
    assert official.rel_err(masks, t_masks) <= TOL
    assert official.rel_err(ious, t_ious) <= TOL


# --- hole filling and sprinkle removal ---------------------------------------------------------


def _reference_postprocess(low, threshold, max_hole_area, max_sprinkle_area):
    """The official semantics in numpy/scipy on low-res logits [C, h, w] -> (logits, changed)."""
    eight = np.ones((3, 3), bool)
    out = low.astype(np.float32).copy()
    for c in range(low.shape[0]):
        original = low[c]
        if max_hole_area > 0:
            labels, _ = ndi.label(original <= threshold, structure=eight)
            areas = np.bincount(labels.ravel())
            hole = (labels > 0) & (areas[labels] <= max_hole_area)
            out[c][hole] = threshold + 10.0
        if max_sprinkle_area > 0:
            labels, _ = ndi.label(original > threshold, structure=eight)  # original logits
            areas = np.bincount(labels.ravel())
            sprinkle = (labels > 0) & (areas[labels] <= max_sprinkle_area)
            out[c][sprinkle] = threshold - 10.0
    return out


def _upsample(low, hw):
    t = torch.from_numpy(np.ascontiguousarray(low))[None]
    return F.interpolate(t, hw, mode="bilinear", align_corners=False)[0].numpy()


@pytest.mark.parametrize("threshold,max_hole,max_sprinkle", [
    (0.0, 3, 5), (0.0, 10, 0), (0.0, 0, 2), (1.0, 4, 4)])
def test_holes_and_sprinkles_match_reference(model, threshold, max_hole, max_sprinkle):
    plain = SAM2ImagePredictor(model, mask_threshold=threshold)
    plain.set_image(_image())
    cleaned = SAM2ImagePredictor(model, mask_threshold=threshold, max_hole_area=max_hole,
                                 max_sprinkle_area=max_sprinkle)
    cleaned.set_image(_image())
    kwargs = dict(point_coords=np.array([[150.0, 100.0], [60.0, 150.0]]),
                  point_labels=np.array([1, 0]))
    _, ious0, low = plain.predict(**kwargs, return_logits=True)
    # The clamp to +-32 does not touch these logits, so they are the decoder's own.
    assert np.abs(low).max() < 32.0
    ref_low = _reference_postprocess(low, threshold, max_hole, max_sprinkle)
    changed = ref_low != low
    assert changed.any(), "no hole or sprinkle was small enough to be changed"
    if max_hole:  # some holes filled, but not every background pixel
        assert (changed & (low <= threshold)).any()
        assert ((low <= threshold) & ~changed).any()
    if max_sprinkle:
        assert (changed & (low > threshold)).any()
        assert ((low > threshold) & ~changed).any()
    expected = _upsample(ref_low, (H, W))

    masks, ious, low_out = cleaned.predict(**kwargs, return_logits=True)
    assert masks.shape == expected.shape
    err = official.rel_err(masks, expected)
    assert err <= TOL, err
    # Post-processing touches neither the IoU predictions nor the returned low-res logits.
    np.testing.assert_array_equal(ious, ious0)
    np.testing.assert_array_equal(low_out, low)
    # Binary masks threshold the cleaned logits (up to pixels right at the threshold).
    binary, _, _ = cleaned.predict(**kwargs)
    band = np.abs(expected - threshold) <= TOL * np.abs(expected).max()
    assert ((binary == (expected > threshold)) | band).all()
    assert not np.array_equal(binary, plain.predict(**kwargs)[0])


def test_without_postprocessing_equals_official(predictor):
    torch_model, _ = converted_pair(NAME, SIZE)
    theirs = official.official_image_predictor(torch_model, max_hole_area=0.0,
                                               max_sprinkle_area=0.0)
    ours = SAM2ImagePredictor(predictor.model, max_hole_area=0.0, max_sprinkle_area=0.0)
    ours.set_image(_image())
    with torch.no_grad():
        theirs.set_image(_image())
        t_out = theirs.predict(**POINT, return_logits=True)
    o_out = ours.predict(**POINT, return_logits=True)
    for o, t in zip(o_out, t_out):
        assert official.rel_err(o, t) <= TOL


def test_prepare_predict_compiles_what_predict_runs(model):
    """`prepare_predict` (the command runs it beside `set_image`) leaves `predict` nothing to
    compile, and its prompts are checked as `predict` checks them."""
    import jax

    from samv2_jax.predictors.image import decode_prompts, postprocess

    # As samv2_jax.load gives them: on the device (committed), which the caches key on.
    model = Model(model.config, jax.device_put(model.params, jax.devices()[0]))
    predictor = SAM2ImagePredictor(model)
    kwargs = dict(point_coords=np.array([[30.0, 40.0], [100.0, 90.0]]),
                  point_labels=np.array([1, 0]), box=np.array([10, 10, 150, 120]))
    predictor.prepare_predict((H + 7, W), multimask_output=False, **kwargs)
    sizes = decode_prompts.jitted._cache_size(), postprocess.jitted._cache_size()
    predictor.set_image(sample_image(H + 7, W))
    masks, _, _ = predictor.predict(multimask_output=False, **kwargs)
    assert masks.shape == (1, H + 7, W)
    assert (decode_prompts.jitted._cache_size(), postprocess.jitted._cache_size()) == sizes
    with pytest.raises(ValueError, match="point_labels"):
        predictor.prepare_predict((H, W), point_coords=np.array([[1.0, 2.0]]))
