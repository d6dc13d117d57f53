"""Position encodings: the sine grid of the FPN neck / memory encoder, and the random-Fourier
encoding of the prompt encoder. Sine grids depend only on static shapes, so they are built
once with numpy and enter the XLA program as constants."""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=64)
def sine_grid(h: int, w: int, num_pos_feats: int, temperature: float = 10000.0) -> np.ndarray:
    """Normalised 2-D sine encoding, [h, w, num_pos_feats] float32: y features then x."""
    half = num_pos_feats // 2
    scale = np.float32(2 * math.pi)
    eps = np.float32(1e-6)
    y = np.arange(1, h + 1, dtype=np.float32)
    x = np.arange(1, w + 1, dtype=np.float32)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = np.float32(temperature) ** (np.float32(2) * (dim_t // 2) / np.float32(half))

    def interleave(v):  # sin on even feature slots, cos on odd ones, paired
        a = v[:, None] / dim_t
        return np.stack([np.sin(a[:, 0::2]), np.cos(a[:, 1::2])], axis=2).reshape(len(v), -1)

    py, px = interleave(y), interleave(x)
    grid = np.concatenate(
        [np.broadcast_to(py[:, None, :], (h, w, half)),
         np.broadcast_to(px[None, :, :], (h, w, half))],
        axis=-1,
    )
    return grid.astype(np.float32)


def random_fourier_encode(gaussian_matrix, coords01):
    """coords01: [..., 2] (x, y) in [0, 1] -> [..., 2 * F] with F random frequencies."""
    c = 2.0 * coords01 - 1.0
    c = c @ gaussian_matrix
    c = 2.0 * np.pi * c
    return jnp.concatenate([jnp.sin(c), jnp.cos(c)], axis=-1)


def random_fourier_grid(gaussian_matrix, h: int, w: int):
    """Dense encoding of pixel centres of an h x w grid: [h, w, 2 * F]."""
    ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
    xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
    coords = jnp.stack(jnp.broadcast_arrays(xs[None, :], ys[:, None]), axis=-1)
    return random_fourier_encode(gaussian_matrix, coords)


def sine_1d(pos, dim: int, temperature: float = 10000.0):
    """1-D sine encoding of (possibly traced) positions [...] -> [..., dim]: sines then cosines
    (official `get_1d_sine_pe`, the object pointers' temporal encoding)."""
    half = dim // 2
    k = np.arange(half, dtype=np.float32)
    freq = jnp.asarray(temperature ** (2 * (k // 2) / half), jnp.float32)
    x = pos[..., None] / freq
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)
