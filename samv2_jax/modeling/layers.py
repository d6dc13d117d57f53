"""Small building blocks over plain param dicts, channels-last.

Param leaves keep the official names ("weight", "bias") in our layout: linear weights are
[in, out], conv kernels HWIO, transposed-conv kernels [kh, kw, in, out].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def linear(p, x):
    y = x @ p["weight"].astype(x.dtype)
    return y + p["bias"].astype(x.dtype)


def _conv(x, w, stride: int, padding: int, groups: int):
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )


def conv2d(p, x, stride: int = 1, padding: int = 0, groups: int = 1):
    """x: [B, H, W, C]; kernel HWIO."""
    w = p["weight"].astype(x.dtype)
    if groups > 1 and groups == x.shape[-1] == w.shape[-1] and stride == 1:
        y = depthwise_conv(x, w, padding)
    elif groups == 1 and stride > 1:
        y = strided_conv(x, w, stride, padding)
    else:
        y = _conv(x, w, stride, padding, groups)
    return y + p["bias"].astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x, w, padding: int):
    """Depthwise stride-1 convolution (x [B, H, W, C], w [kh, kw, 1, C]).

    The forward is XLA's grouped convolution. Only the kernel gradient differs from what
    autodiff gives: XLA's CPU backend computes a grouped convolution's kernel gradient as a
    dense [kh, kw, C, C] one (C times the work: 5.1 s of a 9.3 s training step at 256),
    so here it is the kh * kw per-channel correlations it is, one fused reduction each.
    """
    return _conv(x, w, 1, padding, x.shape[-1])


def _depthwise_fwd(x, w, padding):
    return _conv(x, w, 1, padding, x.shape[-1]), (x, w)


def _depthwise_bwd(padding, res, g):
    dx, dw = _tap_gradients(res, g, 1, padding, depthwise=True)
    return dx, dw[:, :, None, :]


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x, w, stride: int, padding: int):
    """Dense convolution with stride > 1 (x [B, H, W, Ci], w [kh, kw, Ci, Co]).

    The forward is XLA's convolution. Only the kernel gradient differs from what autodiff
    gives: XLA's CPU backend computes it as one convolution with a dilated output-sized
    window, which runs at a fraction of a GFLOP/s (the memory encoder's mask downsampler:
    8.2 s of a 55 s training step at 512); here it is kh * kw matrix products of the
    strided input slices with the output gradient.
    """
    return _conv(x, w, stride, padding, 1)


def _strided_fwd(x, w, stride, padding):
    return _conv(x, w, stride, padding, 1), (x, w)


def _strided_bwd(stride, padding, res, g):
    return _tap_gradients(res, g, stride, padding, depthwise=False)


def _tap_gradients(res, g, stride: int, padding: int, depthwise: bool):
    """(dx, dw) of a convolution: dx from autodiff, dw tap by tap, each kernel tap (i, j)
    correlating the input pixels it saw with the output gradient: a per-channel fused
    reduction for a depthwise kernel ([kh, kw, C]), a matrix product for a dense one."""
    x, w = res
    groups = x.shape[-1] if depthwise else 1
    _, input_vjp = jax.vjp(lambda x_: _conv(x_, w, stride, padding, groups), x)
    (dx,) = input_vjp(g)
    kh, kw = w.shape[:2]
    h, wd = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    acc = jnp.promote_types(x.dtype, jnp.float32)

    def tap(i, j):  # [B, h, wd, Ci]
        seen = jax.lax.slice(xp, (0, i, j, 0),
                             (xp.shape[0], i + stride * (h - 1) + 1, j + stride * (wd - 1) + 1,
                              xp.shape[3]), (1, stride, stride, 1))
        if depthwise:
            return jnp.sum(seen * g, axis=(0, 1, 2), dtype=acc)
        return jnp.einsum("bhwi,bhwo->io", seen, g, preferred_element_type=acc)

    dw = jnp.stack([jnp.stack([tap(i, j) for j in range(kw)]) for i in range(kh)])
    return dx, dw.astype(w.dtype)


strided_conv.defvjp(_strided_fwd, _strided_bwd)


def conv1x1(p, x):
    """A 1x1 convolution is a matmul over channels; cheaper than a general conv on CPU."""
    w = p["weight"].astype(x.dtype)
    return x @ w[0, 0] + p["bias"].astype(x.dtype)


def patchify_conv(p, x, k: int):
    """Convolution with kernel == stride == k (no overlap), as one matmul over patches."""
    b, h, w, c = x.shape
    kernel = p["weight"].astype(x.dtype)  # [k, k, C, O]
    patches = x.reshape(b, h // k, k, w // k, k, c)
    y = jnp.einsum("bhiwjc,ijco->bhwo", patches, kernel)
    return y + p["bias"].astype(x.dtype)


def conv_transpose_2x2(p, x):
    """Transposed convolution with kernel 2, stride 2: every input pixel becomes a 2x2 block."""
    b, h, w, _ = x.shape
    kernel = p["weight"].astype(x.dtype)  # [2, 2, C, O]
    y = jnp.einsum("bhwc,ijco->bhiwjo", x, kernel)
    y = y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])
    return y + p["bias"].astype(x.dtype)


# The two LayerNorm epsilons of SAM 2: torch's nn.LayerNorm default (two-way transformer,
# memory attention), and 1e-6 (the official LayerNorm2d, and Hiera's and the memory
# encoder's norms).
LN_EPS = 1e-5
LN2D_EPS = 1e-6


def layer_norm(p, x, eps: float):
    """LayerNorm over the last axis (also the official LayerNorm2d in channels-last)."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    y = y * p["weight"] + p["bias"]
    return y.astype(x.dtype)


def gelu(x):
    # The official modules use nn.GELU(): the exact erf form, not the tanh approximation.
    return jax.nn.gelu(x, approximate=False)


def mlp(p, x, num_layers: int, activation=jax.nn.relu, sigmoid_output: bool = False):
    for i in range(num_layers):
        x = linear(p["layers"][str(i)], x)
        if i < num_layers - 1:
            x = activation(x)
    return jax.nn.sigmoid(x) if sigmoid_output else x


def _attend(q, k, v, valid=None):
    """q [G, Nq, D] (already scaled), k/v [G, Nk, D] -> [G, Nq, D]; softmax stats in float32.
    valid [G, 1, Nk] bool or None: keys that take part in the softmax."""
    logits = jnp.matmul(q, k.transpose(0, 2, 1)).astype(jnp.float32)
    if valid is not None:
        # The most negative finite value, not -inf: a row with no valid key stays finite.
        logits = jnp.where(valid, logits, jnp.finfo(jnp.float32).min)
    e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
    out = jnp.matmul(e.astype(v.dtype), v)
    return out / e.sum(-1, keepdims=True).astype(out.dtype)


def dot_product_attention(q, k, v, key_valid=None):
    """q/k: [B, Nq or Nk, H, D], v: [B, Nk, H, Dv] -> [B, Nq, H, Dv].

    key_valid: [B, Nk] bool or None. Keys marked False get zero weight, as if they were
    absent (a fixed-capacity memory pads its unused slots this way); None attends to all.

    On CPU the layout decides the speed: heads are folded into the batch (plain batched
    matmuls), thousands of small windows run in groups so each group stays in cache, and a
    large attention (4096 x 4096 per head in the trunk's global blocks) runs over query
    chunks instead of materialising a multi-hundred-MB logits tensor.
    """
    b, nq, h, d = q.shape
    nk = k.shape[1]

    def fold(x):
        return x.transpose(0, 2, 1, 3).reshape(b * h, x.shape[1], x.shape[-1])

    q = fold(q * jnp.asarray(d ** -0.5, q.dtype))
    k, v = fold(k), fold(v)
    g = b * h
    valid = None
    if key_valid is not None:  # [B, Nk] -> [B * H, 1, Nk], the folded batch order
        valid = jnp.broadcast_to(key_valid[:, None, None, :], (b, h, 1, nk)).reshape(g, 1, nk)
    # Long key sequences (a full memory bank: 28k keys) run better in larger query chunks.
    chunk = _Q_CHUNK if nk <= 8192 else 2 * _Q_CHUNK
    if nq * nk > (1 << 21) and nq % chunk == 0:
        qs = q.reshape(g, nq // chunk, chunk, d).transpose(1, 0, 2, 3)
        out = jax.lax.map(lambda qc: _attend(qc, k, v, valid), qs).transpose(1, 0, 2, 3)
    elif g >= 4 * _WINDOW_GROUP and g % _WINDOW_GROUP == 0:
        grouped = [x.reshape(g // _WINDOW_GROUP, _WINDOW_GROUP, *x.shape[1:])
                   for x in (q, k, v) + (() if valid is None else (valid,))]
        out = jax.lax.map(lambda t: _attend(*t), tuple(grouped))
    else:
        out = _attend(q, k, v, valid)
    return out.reshape(b, h, nq, v.shape[-1]).transpose(0, 2, 1, 3)


_Q_CHUNK = 256
_WINDOW_GROUP = 64


def chunked_rows(fn, x, rows: int = 4096, min_rows: int = 16384):
    """Apply a row-wise fn over [..., C] in chunks of `rows` tokens, so wide intermediates
    (the 4x MLP hidden layer) stay in cache; small inputs run whole."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    n = flat.shape[0]
    if n < min_rows or n % rows:
        return fn(x)
    out = jax.lax.map(fn, flat.reshape(n // rows, rows, c))
    return out.reshape(*x.shape[:-1], out.shape[-1])
