"""2-D axial rotary position encoding (RoPE) of memory attention, in real cos/sin form.

Channels are taken in adjacent pairs (2i, 2i+1), each pair a complex number rotated by an
angle that depends on the token's grid position: the first quarter of the pairs turn with
the column (x), the second quarter with the row (y). This equals the official complex
multiply `x * exp(i * angle)` written out as two real products.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=32)
def axial_angles(dim: int, h: int, w: int, theta: float = 10000.0) -> np.ndarray:
    """Rotation angles [h * w, dim // 2] float32 for tokens in row-major (y, x) order.

    Built in float32 like the official table, so both rotate by the same rounded angles.
    Static shapes only, so this is a numpy constant and never traced.
    """
    if dim % 4:
        raise ValueError(f"axial RoPE needs a head width divisible by 4, got {dim}")
    freqs = np.float32(1.0) / (
        np.float32(theta) ** (np.arange(0, dim, 4)[: dim // 4].astype(np.float32) / np.float32(dim))
    )
    t = np.arange(h * w, dtype=np.float32)
    t_x, t_y = t % np.float32(w), np.floor(t / np.float32(w))
    return np.concatenate([np.outer(t_x, freqs), np.outer(t_y, freqs)], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=32)
def axial_cos_sin(dim: int, h: int, w: int, theta: float = 10000.0):
    """(cos, sin) of `axial_angles`, each [h * w, dim // 2] float32."""
    a = axial_angles(dim, h, w, theta)
    return np.cos(a), np.sin(a)


def apply_rope(x, cos, sin):
    """x [B, N, H, D]; cos/sin [N, D // 2] -> x rotated pairwise, in x's dtype.

    The rotation runs in float32 whatever x's dtype, as the official one does.
    """
    dtype = x.dtype
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    c = jnp.asarray(cos)[:, None, :]  # broadcast over heads
    s = jnp.asarray(sin)[:, None, :]
    out = jnp.stack([re * c - im * s, re * s + im * c], axis=-1)
    return out.reshape(x.shape).astype(dtype)


def apply_rope_frames(x, cos, sin):
    """x [B, F * N, H, D]: F whole frames, each rotated with the same N grid positions."""
    b, m, h, d = x.shape
    n = cos.shape[0]
    if m % n:
        raise ValueError(f"{m} memory tokens are not whole frames of {n} tokens")
    frames = x.reshape(b * (m // n), n, h, d)
    return apply_rope(frames, cos, sin).reshape(x.shape)
