"""samv2_jax.modeling.transforms against torch's F.interpolate and the official SAM 2
preprocessing."""

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
