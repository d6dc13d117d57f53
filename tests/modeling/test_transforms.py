"""samv2_jax.modeling.transforms against torch's F.interpolate and the official SAM 2 preprocessing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from samv2_jax.modeling import transforms as T

torch.set_num_threads(1)

# Measured worst cases are ~2e-7 (bilinear) and ~8e-7 (bicubic) on [0, 1] data: float32
# rounding only. The bounds leave room for other CPUs / accelerators.
BILINEAR_TOL = 1e-6
BICUBIC_TOL = 2e-6

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

BILINEAR_CASES = [
    ((1800, 1200), (1024, 1024)),  # SAM's usual non-integer downscale
    ((333, 517), (256, 256)),
    ((256, 256), (1200, 1800)),  # mask logits up to a large image
    ((64, 64), (333, 517)),
    ((256, 256), (100, 150)),  # mask logits to an image smaller than the mask
    ((333, 517), (16, 9)),  # strong shrink: antialias needs > 16 taps (matmul path)
    ((48, 64), (64, 48)),  # up on one axis, down on the other
    ((5, 7), (3, 11)),
    ((7, 5), (1, 1)),
    ((1, 1), (4, 6)),
    ((17, 1), (5, 3)),
    ((10, 13), (10, 13)),  # identity
]

BICUBIC_CASES = [
    ((14, 14), (64, 64)),  # Hiera position-embedding sizes
    ((16, 16), (37, 53)),
    ((7, 7), (32, 48)),
    ((64, 64), (14, 14)),
    ((33, 17), (5, 70)),
    ((4, 4), (1, 1)),
    ((1, 1), (3, 3)),
    ((10, 10), (10, 10)),
]


def _rand(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _torch_resize(x_hwc: np.ndarray, size, **kw) -> np.ndarray:
    """Reference: channels-last numpy -> NCHW torch -> interpolate -> channels-last."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_hwc, -1, -3)))
    lead = t.shape[:-3]
    t = t.reshape((-1,) + tuple(t.shape[-3:]))
    y = F.interpolate(t, size=tuple(size), align_corners=False, **kw)
    y = y.reshape(lead + tuple(y.shape[1:]))
    return np.moveaxis(y.numpy(), -3, -1)


def _max_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ---------------------------------------------------------------------------------- resize


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("src,dst", BILINEAR_CASES)
def test_resize_bilinear_matches_torch(src, dst, antialias):
    x = _rand(src + (3,), seed=src[0] * 7 + dst[1])
    ours = T.resize_bilinear(x, dst, antialias=antialias)
    ref = _torch_resize(x, dst, mode="bilinear", antialias=antialias)
    assert ours.dtype == jnp.float32
    assert _max_err(ours, ref) <= BILINEAR_TOL


@pytest.mark.parametrize("src,dst", BICUBIC_CASES)
def test_resize_bicubic_matches_torch(src, dst):
    x = _rand(src + (4,), seed=src[1] * 3 + dst[0])
    ours = T.resize_bicubic(x, dst)
    ref = _torch_resize(x, dst, mode="bicubic")
    assert _max_err(ours, ref) <= BICUBIC_TOL


def test_bicubic_differs_from_jax_image_resize():
    # Guards against swapping in jax.image.resize, whose cubic kernel (A = -0.5) differs.
    x = _rand((14, 14, 2), seed=3)
    ref = _torch_resize(x, (64, 64), mode="bicubic")
    theirs = jax.image.resize(x, (64, 64, 2), method="cubic")
    assert _max_err(theirs, ref) > 1e-3
    assert _max_err(T.resize_bicubic(x, (64, 64)), ref) <= BICUBIC_TOL


def test_strong_shrink_uses_dense_path():
    idx, _ = T._taps_linear_aa(517, 9, np.float32)
    assert idx.shape[1] > T._MAX_GATHER_TAPS


@pytest.mark.parametrize("n_in,n_out", [(1800, 1024), (333, 256), (64, 517), (517, 9), (7, 1)])
def test_antialias_weights_are_normalised(n_in, n_out):
    idx, w = T._taps_linear_aa(n_in, n_out, np.float32)
    assert idx.min() >= 0 and idx.max() < n_in
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_resize_leading_batch_dims():
    x = _rand((2, 3, 40, 30, 2), seed=5)
    ours = np.asarray(T.resize_bilinear(x, (17, 23), antialias=True))
    ref = _torch_resize(x, (17, 23), mode="bilinear", antialias=True)
    assert _max_err(ours, ref) <= BILINEAR_TOL
    single = np.asarray(T.resize_bilinear(x[1, 2], (17, 23), antialias=True))
    np.testing.assert_array_equal(ours[1, 2], single)


def test_resize_antialias_matches_pil():
    # PIL's antialiased bilinear is an independent implementation of the same filter.
    a = _rand((97, 131), seed=11)
    pil = np.asarray(Image.fromarray(a).resize((50, 40), Image.Resampling.BILINEAR))
    ours = T.resize_bilinear(a[:, :, None], (40, 50), antialias=True)[:, :, 0]
    assert _max_err(ours, pil) <= 1e-5


def test_resize_dtypes():
    x8 = (np.arange(6 * 8 * 3) % 256).astype(np.uint8).reshape(6, 8, 3)
    y = T.resize_bilinear(x8, (3, 4), antialias=True)
    assert y.dtype == jnp.float32
    ref = _torch_resize(x8.astype(np.float32), (3, 4), mode="bilinear", antialias=True)
    assert _max_err(y, ref) <= 1e-4
    yb = T.resize_bilinear(jnp.asarray(_rand((6, 8, 3)), jnp.bfloat16), (3, 4))
    assert yb.dtype == jnp.bfloat16


def test_resize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channels-last"):
        T.resize_bilinear(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        T.resize_bilinear(np.zeros((4, 4, 1), np.float32), (0, 2))


def test_resize_jit():
    x = _rand((45, 61, 3), seed=2)
    f = jax.jit(T.resize_bilinear, static_argnames=("size", "antialias"))
    for aa in (True, False):
        out = f(x, size=(32, 24), antialias=aa)
        # Fusion under jit may contract multiply-adds, so allow float32 rounding.
        assert _max_err(out, T.resize_bilinear(x, (32, 24), antialias=aa)) <= BILINEAR_TOL
        ref = _torch_resize(x, (32, 24), mode="bilinear", antialias=aa)
        assert _max_err(out, ref) <= BILINEAR_TOL
    g = jax.jit(T.resize_bicubic, static_argnames="size")
    ref = _torch_resize(x, (20, 90), mode="bicubic")
    assert _max_err(g(x, size=(20, 90)), ref) <= BICUBIC_TOL


# ------------------------------------------------------------------------------ preprocess


def _official_preprocess(img_u8: np.ndarray, size: int) -> np.ndarray:
    """SAM2Transforms' ToTensor -> Resize -> Normalize, written with plain torch ops."""
    t = torch.from_numpy(np.ascontiguousarray(img_u8.transpose(2, 0, 1))).float().div(255)
    t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)[0]
    t = (t - MEAN) / STD
    return t.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("hw,size", [((1200, 1800), 1024), ((480, 640), 1024),
                                     ((333, 517), 256), ((256, 256), 256)])
def test_preprocess_image_matches_official(hw, size):
    img = np.random.default_rng(hw[0]).integers(0, 256, hw + (3,), dtype=np.uint8)
    ours = T.preprocess_image(img, size)
    assert ours.shape == (size, size, 3) and ours.dtype == jnp.float32
    assert _max_err(ours, _official_preprocess(img, size)) <= 5 * BILINEAR_TOL


def test_preprocess_image_batched_and_jit():
    imgs = np.random.default_rng(1).integers(0, 256, (2, 90, 70, 3), dtype=np.uint8)
    f = jax.jit(T.preprocess_image, static_argnums=1)
    out = f(jnp.asarray(imgs), 64)
    assert out.shape == (2, 64, 64, 3)
    for i in range(2):
        assert _max_err(out[i], _official_preprocess(imgs[i], 64)) <= 5 * BILINEAR_TOL
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(T.preprocess_image(imgs[i], 64)),
                                   atol=1e-6)


def test_preprocess_image_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        T.preprocess_image(np.zeros((8, 8, 3), np.float32), 16)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        T.preprocess_image(np.zeros((3, 8, 8), np.uint8), 16)


# ----------------------------------------------------------------------------- postprocess


@pytest.mark.parametrize("lowres,orig", [((256, 256), (1200, 1800)), ((256, 256), (100, 150)),
                                         ((64, 64), (333, 517)), ((32, 32), (32, 32))])
def test_postprocess_masks_matches_official(lowres, orig):
    logits = 10 * np.random.default_rng(0).standard_normal((2, 3) + lowres).astype(np.float32)
    ours = T.postprocess_masks(logits, orig)
    ref = F.interpolate(torch.from_numpy(logits), orig, mode="bilinear", align_corners=False)
    assert ours.shape == (2, 3) + orig
    assert _max_err(ours, ref.numpy()) <= BILINEAR_TOL * np.abs(logits).max()


def test_postprocess_masks_jit_and_unbatched():
    logits = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    f = jax.jit(T.postprocess_masks, static_argnums=1)
    out = f(logits, (90, 120))
    assert out.shape == (90, 120)
    ref = F.interpolate(torch.from_numpy(logits)[None, None], (90, 120), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    assert _max_err(out, ref) <= BILINEAR_TOL * np.abs(logits).max()


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

    jitted = jax.jit(T.transform_coords, static_argnums=(1, 2))(jnp.asarray(pts), (1200, 1800), 1024)
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
