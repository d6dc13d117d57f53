"""Image pre/post-processing for SAM 2 in JAX, numerically matched to the PyTorch reference.

Resizes are separable: per-axis tap tables (indices + weights) are built on the host from
static shapes, reproducing torch's float arithmetic, then applied with gathers or a matmul.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Above this many taps per output (strong antialiased downsampling) one dense matmul beats
# a long chain of gathers.
_MAX_GATHER_TAPS = 16
# torch's bicubic kernel parameter (jax.image.resize uses -0.5).
_CUBIC_A = -0.75

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "resize_bilinear",
    "resize_bicubic",
    "preprocess_image",
    "postprocess_masks",
]


# ----------------------------------------------------------------------------------------
# Host-side tap tables. Every quantity is rounded to `dt` at the same points where torch's
# C++ kernels store into a `scalar_t`; Python floats play the role of C++ doubles.
# ----------------------------------------------------------------------------------------


def _scale(n_in: int, n_out: int, dt) -> Any:
    return dt(n_in) / dt(n_out)


def _frozen(idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Tables are cached and shared between calls.
    idx, w = idx.astype(np.int32), np.ascontiguousarray(w)
    idx.setflags(write=False)
    w.setflags(write=False)
    return idx, w


@functools.lru_cache(maxsize=256)
def _taps_linear(n_in: int, n_out: int, dt) -> tuple[np.ndarray, np.ndarray]:
    """Two-tap bilinear (half-pixel centres, source index clamped at 0 and n_in - 1)."""
    scale = _scale(n_in, n_out, dt)
    # The source position is formed in double precision and rounded once.
    src = (float(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(dt)
    src = np.maximum(src, dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(dt), dt(0), dt(1)).astype(dt)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    idx = np.stack([i0, i1], axis=1)
    w = np.stack([(dt(1) - lam).astype(dt), lam], axis=1)
    return _frozen(idx, w.astype(dt))


@functools.lru_cache(maxsize=256)
def _taps_linear_aa(n_in: int, n_out: int, dt) -> tuple[np.ndarray, np.ndarray]:
    """Triangle filter widened by the scale when shrinking (PIL / torch antialias)."""
    scale = _scale(n_in, n_out, dt)
    downscale = scale >= 1.0
    support = scale if downscale else dt(1.0)
    invscale = dt(1.0 / float(scale)) if downscale else dt(1.0)
    i = np.arange(n_out, dtype=np.float64)
    center = (float(scale) * (i + 0.5)).astype(dt)
    # C++ truncates toward zero when casting to int64; the lower end is clamped anyway.
    lo = np.trunc((center - support).astype(dt).astype(np.float64) + 0.5).astype(np.int64)
    hi = np.trunc((center + support).astype(dt).astype(np.float64) + 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    count = np.minimum(hi, n_in) - lo
    k = max(int(count.max()), 1)

    w = np.zeros((n_out, k), dt)
    total = np.zeros(n_out, dt)
    for j in range(k):
        d = ((lo + j).astype(dt) - center).astype(dt).astype(np.float64) + 0.5
        x = np.abs((d * float(invscale)).astype(dt))
        wj = np.where(x < 1, (dt(1) - x).astype(dt), dt(0)).astype(dt)
        wj = np.where(j < count, wj, dt(0))
        w[:, j] = wj
        total = (total + wj).astype(dt)
    nz = total != 0
    w[nz] = (w[nz] / total[nz, None]).astype(dt)
    # Padding taps carry zero weight; point them at a valid pixel.
    idx = np.minimum(lo[:, None] + np.arange(k)[None, :], n_in - 1)
    return _frozen(idx, w)


def _cubic_near(x, dt):  # |x| <= 1
    a = dt(_CUBIC_A)
    return ((((a + dt(2)) * x - (a + dt(3))) * x) * x + dt(1)).astype(dt)


def _cubic_far(x, dt):  # 1 < |x| < 2
    a = dt(_CUBIC_A)
    return ((((a * x - dt(5) * a) * x + dt(8) * a) * x) - dt(4) * a).astype(dt)


@functools.lru_cache(maxsize=256)
def _taps_cubic(n_in: int, n_out: int, dt) -> tuple[np.ndarray, np.ndarray]:
    """Four-tap Keys cubic with A = -0.75, out-of-range taps clamped to the border pixel."""
    scale = _scale(n_in, n_out, dt)
    # Unlike bilinear, a negative source position is kept (the border taps clamp instead).
    src = (float(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(dt)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    t = np.clip(src - i0.astype(dt), dt(0), dt(1)).astype(dt)
    t_rev = (dt(1) - t).astype(dt)
    w = np.stack(
        [
            _cubic_far((t + dt(1)).astype(dt), dt),
            _cubic_near(t, dt),
            _cubic_near(t_rev, dt),
            _cubic_far((t_rev + dt(1)).astype(dt), dt),
        ],
        axis=1,
    )
    idx = np.clip(i0[:, None] - 1 + np.arange(4)[None, :], 0, n_in - 1)
    return _frozen(idx, w.astype(dt))


# ----------------------------------------------------------------------------------------
# Applying tap tables.
# ----------------------------------------------------------------------------------------


def _host_dtype(dtype) -> type:
    return np.float64 if jnp.dtype(dtype) == jnp.float64 else np.float32


def _compute_dtype(x: jax.Array):
    # Low-precision or integer inputs are resampled in float32.
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32:
        return x.dtype
    return jnp.float32


def _apply_taps(x: jax.Array, axis: int, idx: np.ndarray, w: np.ndarray) -> jax.Array:
    """out[..., o, ...] = sum_k w[o, k] * x[..., idx[o, k], ...] along `axis` (negative)."""
    n_out, k = idx.shape
    if k > _MAX_GATHER_TAPS:
        dense = np.zeros((n_out, x.shape[axis]), w.dtype)
        np.add.at(dense, (np.repeat(np.arange(n_out), k), idx.ravel()), w.ravel())
        xm = jnp.moveaxis(x, axis, -1)
        y = jnp.matmul(xm, jnp.asarray(dense.T, x.dtype), precision=jax.lax.Precision.HIGHEST)
        return jnp.moveaxis(y, -1, axis)
    # Accumulate taps in order, as torch does, so rounding agrees closely.
    bshape = (n_out,) + (1,) * (-axis - 1)
    out = None
    for j in range(k):
        term = jnp.take(x, jnp.asarray(idx[:, j]), axis=axis) * jnp.asarray(
            w[:, j].reshape(bshape), x.dtype
        )
        out = term if out is None else out + term
    return out


def _resize(x, size: Sequence[int], taps_fn) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(f"expected a channels-last array [..., H, W, C], got shape {x.shape}")
    h_out, w_out = (int(s) for s in size)
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"output size must be positive, got {tuple(size)}")
    h_in, w_in = x.shape[-3], x.shape[-2]
    if h_in == 0 or w_in == 0:
        raise ValueError(f"cannot resize an empty image of shape {x.shape}")
    out_dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(_compute_dtype(x))
    dt = _host_dtype(x.dtype)
    # Width first, then height: the order torch's separable kernels use.
    if w_out != w_in:
        x = _apply_taps(x, -2, *taps_fn(w_in, w_out, dt))
    if h_out != h_in:
        x = _apply_taps(x, -3, *taps_fn(h_in, h_out, dt))
    return x.astype(out_dtype)


def resize_bilinear(x, size: Sequence[int], antialias: bool = False) -> jax.Array:
    """Bilinear resize of channels-last `x` [..., H, W, C] to `size` = (h, w).

    Equals torch `F.interpolate(mode="bilinear", align_corners=False, antialias=antialias)`
    applied to the NCHW transpose.
    """
    return _resize(x, size, _taps_linear_aa if antialias else _taps_linear)


def resize_bicubic(x, size: Sequence[int]) -> jax.Array:
    """Bicubic resize of channels-last `x` [..., H, W, C]; equals torch `F.interpolate(
    mode="bicubic", align_corners=False)` (A = -0.75, clamped borders, no antialias)."""
    return _resize(x, size, _taps_cubic)


# ----------------------------------------------------------------------------------------
# SAM 2 pipeline pieces.
# ----------------------------------------------------------------------------------------


def preprocess_image(image, image_size: int) -> jax.Array:
    """uint8 RGB [H, W, 3] (or [B, H, W, 3]) -> normalised float32 [image_size, image_size, 3].

    Scale to [0, 1], antialiased bilinear resize to a square, ImageNet mean/std.
    """
    image = jnp.asarray(image)
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 RGB of shape [H, W, 3] or [B, H, W, 3], got {image.shape}"
        )
    if image.dtype != jnp.uint8:
        raise TypeError(
            f"expected a uint8 image, got dtype {image.dtype}; see "
            "samv2_jax.predictors.inputs.as_rgb_uint8 to convert"
        )
    x = image.astype(jnp.float32) / jnp.float32(255)
    x = resize_bilinear(x, (image_size, image_size), antialias=True)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (x - mean) / std


def postprocess_masks(mask_logits, orig_hw: Sequence[int]) -> jax.Array:
    """Upsample low-res logits [..., h, w] to [..., H, W] (bilinear, no antialias)."""
    m = jnp.asarray(mask_logits)
    return resize_bilinear(m[..., None], tuple(orig_hw), antialias=False)[..., 0]
