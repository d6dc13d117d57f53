"""Small building blocks over plain param dicts, channels-last.

Param leaves keep the official names ("weight", "bias") in our layout: linear weights are
[in, out], conv kernels HWIO, transposed-conv kernels [kh, kw, in, out].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def linear(p, x):
    y = x @ p["weight"].astype(x.dtype)
    return y + p["bias"].astype(x.dtype)


def conv2d(p, x, stride: int = 1, padding: int = 0, groups: int = 1):
    """x: [B, H, W, C]; kernel HWIO."""
    w = p["weight"].astype(x.dtype)
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
    )
    return y + p["bias"].astype(x.dtype)


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


def dot_product_attention(q, k, v, q_chunk: int = 256):
    """q: [B, Nq, H, D], k/v: [B, Nk, H, D] -> [B, Nq, H, D]; softmax statistics in float32.

    Large attention (the trunk's global blocks: 4096 x 4096 per head at 1024) runs over query
    chunks so the logits stay in cache instead of a multi-hundred-MB intermediate.
    """
    b, nq, h, d = q.shape
    nk = k.shape[1]
    q = (q * jnp.asarray(d ** -0.5, q.dtype)).transpose(0, 2, 1, 3)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def attend(qc):
        logits = jnp.einsum("bhqd,bhkd->bhqk", qc, k).astype(jnp.float32)
        e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
        out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), v)
        return out / e.sum(-1, keepdims=True).astype(out.dtype)

    if nq * nk > (1 << 21) and nq % q_chunk == 0:
        chunks = q.reshape(b, h, nq // q_chunk, q_chunk, d).transpose(2, 0, 1, 3, 4)
        out = jax.lax.map(attend, chunks).transpose(1, 2, 0, 3, 4).reshape(b, h, nq, d)
    else:
        out = attend(q)
    return out.transpose(0, 2, 1, 3)
