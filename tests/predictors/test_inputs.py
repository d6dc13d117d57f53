"""samv2_jax.predictors.inputs: coordinates into the model's frame (against the official
formula) and host-side image validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from samv2_jax.predictors import inputs as T

# ---------------------------------------------------------------------------------- coords


def test_transform_coords_numpy_and_jax():
    pts = np.array([[[10.0, 20.0], [1799.0, 0.0]], [[0.5, 1199.5], [900.0, 600.0]]], np.float32)
    expect = np.stack([pts[..., 0] / 1800 * 1024, pts[..., 1] / 1200 * 1024], axis=-1)

    out_np = T.transform_coords(pts, (1200, 1800), 1024)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_np, expect, rtol=1e-6)

    out_jax = T.transform_coords(jnp.asarray(pts), (1200, 1800), 1024)
    assert isinstance(out_jax, jax.Array)
    np.testing.assert_allclose(np.asarray(out_jax), expect, rtol=1e-6)

    jitted = jax.jit(T.transform_coords, static_argnums=(1, 2))(jnp.asarray(pts), (1200, 1800),
                                                                  1024)
    np.testing.assert_allclose(np.asarray(jitted), expect, rtol=1e-6)

    unit = np.array([[0.25, 0.5]], np.float32)
    np.testing.assert_allclose(T.transform_coords(unit, (7, 9), 512, normalize=False),
                               [[128.0, 256.0]])


def test_transform_coords_matches_official_formula():
    # The official method divides x by width and y by height, then scales.
    pts = torch.tensor([[13.0, 77.0], [333.0, 1.0]])
    ref = pts.clone()
    ref[..., 0] = ref[..., 0] / 517
    ref[..., 1] = ref[..., 1] / 333
    ref = ref * 1024
    out = T.transform_coords(pts.numpy(), (333, 517), 1024)
    np.testing.assert_array_equal(out, ref.numpy())


def test_transform_coords_int_input_and_bad_shape():
    out = T.transform_coords(np.array([[5, 10]]), (20, 10), 100)
    assert np.issubdtype(out.dtype, np.floating)
    np.testing.assert_allclose(out, [[50.0, 50.0]])
    with pytest.raises(ValueError, match="size 2"):
        T.transform_coords(np.zeros((3, 3)), (10, 10), 100)


# ----------------------------------------------------------------------------- as_rgb_uint8


def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_as_rgb_uint8_passthrough():
    img = _rgb()
    assert T.as_rgb_uint8(img) is img


def test_as_rgb_uint8_numpy_gray_and_rgba():
    img = _rgb()
    gray = img[:, :, 0]
    for g in (gray, gray[:, :, None]):
        out = T.as_rgb_uint8(g)
        assert out.shape == (6, 5, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)
    rgba = np.concatenate([img, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(T.as_rgb_uint8(rgba), img)
    np.testing.assert_array_equal(T.as_rgb_uint8(jnp.asarray(img)), img)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "1", "CMYK"])
def test_as_rgb_uint8_pil_modes(mode):
    src = Image.fromarray(_rgb(seed=1)).convert(mode)
    out = T.as_rgb_uint8(src)
    assert isinstance(out, np.ndarray) and out.shape == (6, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(src.convert("RGB")))


def test_as_rgb_uint8_pil_16bit_is_rescaled_not_clipped():
    a = np.array([[0, 257, 65535], [32896, 1000, 65280]], np.uint16)
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    out = T.as_rgb_uint8(im)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 255], [128, 4, 254]])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


@pytest.mark.parametrize(
    "bad,exc,words",
    [
        (np.zeros((6, 5, 3), np.float32), TypeError, ["float32", "uint8", "[0, 255]"]),
        (np.zeros((6, 5, 3), np.uint16), TypeError, ["uint16", "uint8"]),
        (np.zeros((3, 6, 5), np.uint8), ValueError, ["HWC", "transpose"]),
        (np.zeros((2, 6, 5, 3), np.uint8), ValueError, ["HWC", "4 dims"]),
        (np.zeros((6,), np.uint8), ValueError, ["HWC", "1 dims"]),
        (np.zeros((6, 5, 2), np.uint8), ValueError, ["2 channels"]),
        (np.zeros((6, 5, 5), np.uint8), ValueError, ["5 channels"]),
        (np.zeros((0, 5, 3), np.uint8), ValueError, ["empty"]),
        (np.zeros((6, 0), np.uint8), ValueError, ["empty"]),
        ("photo.jpg", TypeError, ["photo.jpg", "load", "PIL.Image.open"]),
        ([[1, 2], [3, 4]], TypeError, ["list", "PIL.Image.open"]),
        (None, TypeError, ["NoneType"]),
    ],
)
def test_as_rgb_uint8_errors(bad, exc, words):
    with pytest.raises(exc) as info:
        T.as_rgb_uint8(bad)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)


def test_as_rgb_uint8_empty_pil():
    with pytest.raises(ValueError, match="empty"):
        T.as_rgb_uint8(Image.new("RGB", (0, 4)))
