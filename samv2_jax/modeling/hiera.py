"""Hiera trunk: a patch embedding, then blocks of windowed or global attention that halve the
resolution (max-pooling the queries) at each stage change. Returns every stage's output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.config import HieraBlockSpec, HieraConfig
from samv2_jax.modeling.layers import (
    LN2D_EPS,
    chunked_rows,
    conv2d,
    dot_product_attention,
    gelu,
    layer_norm,
    linear,
    mlp,
)
from samv2_jax.modeling.transforms import resize_bicubic


def max_pool(x, stride: tuple[int, int]):
    """Non-overlapping max pool on [B, H, W, C]; a trailing odd row/column is dropped."""
    b, h, w, c = x.shape
    sh, sw = stride
    x = x[:, : h // sh * sh, : w // sw * sw]
    return x.reshape(b, h // sh, sh, w // sw, sw, c).max(axis=(2, 4))


def window_partition(x, ws: int):
    """[B, H, W, C] -> [B * nWindows, ws, ws, C], zero-padding H and W up to multiples of ws."""
    b, h, w, c = x.shape
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    if (hp, wp) != (h, w):
        # Padded tokens stay in the windows as keys, exactly as in the official trunk.
        x = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    x = x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c)


def window_unpartition(windows, ws: int, hw: tuple[int, int]):
    """Inverse of window_partition for an output of size hw (padding cropped)."""
    h, w = hw
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.reshape(b, hp // ws, wp // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, c)[:, :h, :w]


def multiscale_attention(p, spec: HieraBlockSpec, x):
    b, h, w, _ = x.shape
    heads = spec.num_heads
    qkv = linear(p["qkv"], x).reshape(b, h * w, 3, heads, spec.dim_out // heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if spec.q_stride:
        q = max_pool(q.reshape(b, h, w, spec.dim_out), spec.q_stride)
        h, w = q.shape[1:3]
        q = q.reshape(b, h * w, heads, spec.dim_out // heads)
    out = dot_product_attention(q, k, v).reshape(b, h, w, spec.dim_out)
    return linear(p["proj"], out)


def drop_path(x, rate: float, key):
    """Stochastic depth (training only): each image's residual branch is dropped with
    probability `rate`, the kept ones scaled by 1 / (1 - rate). rate 0 or key None: x."""
    if rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def multiscale_block(p, spec: HieraBlockSpec, x, *, drop_path_rate: float = 0.0, key=None):
    """One block; `drop_path_rate` with a `key` turns on stochastic depth (training)."""
    k_attn, k_mlp = (None, None) if key is None else jax.random.split(key)
    shortcut = x
    x = layer_norm(p["norm1"], x, LN2D_EPS)
    if spec.dim != spec.dim_out:
        shortcut = linear(p["proj"], x)
        if spec.q_stride:
            shortcut = max_pool(shortcut, spec.q_stride)

    ws = spec.window_size
    if ws > 0:
        x = window_partition(x, ws)
    x = multiscale_attention(p["attn"], spec, x)
    if ws > 0:
        if spec.q_stride:
            ws = ws // spec.q_stride[0]
        x = window_unpartition(x, ws, shortcut.shape[1:3])

    x = shortcut + drop_path(x, drop_path_rate, k_attn)
    return x + drop_path(chunked_rows(
        lambda t: mlp(p["mlp"], layer_norm(p["norm2"], t, LN2D_EPS), 2, activation=gelu), x),
        drop_path_rate, k_mlp)


def position_embedding(p, cfg: HieraConfig, hw: tuple[int, int], dtype):
    """Background embedding resized (bicubic) to the token grid, plus the tiled window one."""
    h, w = hw
    bkg = resize_bicubic(p["pos_embed"].astype(jnp.float32), (h, w))
    win = p["pos_embed_window"].astype(jnp.float32)
    ws = win.shape[1]
    if h % ws or w % ws:
        raise ValueError(
            f"the token grid {h}x{w} is not a multiple of the window size {ws}; "
            "the image size must be a multiple of 32"
        )
    return (bkg + jnp.tile(win, (1, h // ws, w // ws, 1))).astype(dtype)


def hiera(p, cfg: HieraConfig, images, *, drop_path_rate: float = 0.0, key=None,
          remat_policy=None):
    """images: [B, S, S, 3] normalised -> list of stage outputs, finest first, NHWC.

    Training hooks (the defaults are inference): `drop_path_rate` with a `key` gives block i
    stochastic depth at rate i / (depth - 1) * drop_path_rate, as the official trunk;
    `remat_policy` (a `jax.checkpoint_policies` member) recomputes each block's activations in
    the backward pass instead of keeping them.
    """
    x = conv2d(p["patch_embed"]["proj"], images, stride=cfg.patch_stride,
               padding=cfg.patch_padding)
    x = x + position_embedding(p, cfg, x.shape[1:3], x.dtype)
    outputs = []
    stage_ends = set(cfg.stage_ends)
    rates = np.linspace(0.0, drop_path_rate, cfg.depth, dtype=np.float32).tolist()
    use_keys = key is not None and drop_path_rate > 0
    keys = jax.random.split(key, cfg.depth) if use_keys else [None] * cfg.depth
    for i, spec in enumerate(cfg.block_specs()):
        def block(bp, x, k, spec=spec, rate=rates[i]):
            return multiscale_block(bp, spec, x, drop_path_rate=rate, key=k)

        if remat_policy is not None:
            block = jax.checkpoint(block, policy=remat_policy)
        x = block(p["blocks"][str(i)], x, keys[i])
        if i in stage_ends:
            outputs.append(x)
    return outputs
