"""Two-way transformer of the mask decoder: prompt tokens and image tokens attend to each
other in turn, so each side is updated with what the other knows."""

from __future__ import annotations

import jax.numpy as jnp

from samv2_jax.modeling.layers import LN_EPS, dot_product_attention, layer_norm, linear, mlp


def attention(p, q, k, v, num_heads: int, *, key_valid=None):
    """Multi-head attention whose projections may shrink the width (downsample rate).
    key_valid [B, Nk] bool or None: keys left out of the attention (padding prompt tokens)."""
    q, k, v = linear(p["q_proj"], q), linear(p["k_proj"], k), linear(p["v_proj"], v)

    def heads(x):
        return x.reshape(*x.shape[:2], num_heads, x.shape[-1] // num_heads)

    out = dot_product_attention(heads(q), heads(k), heads(v), key_valid=key_valid)
    return linear(p["out_proj"], out.reshape(*out.shape[:2], -1))


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads: int, skip_first_pe: bool, *,
                  token_valid=None):
    if skip_first_pe:
        queries = attention(p["self_attn"], queries, queries, queries, num_heads,
                            key_valid=token_valid)
    else:
        q = queries + query_pe
        queries = queries + attention(p["self_attn"], q, q, queries, num_heads,
                                      key_valid=token_valid)
    queries = layer_norm(p["norm1"], queries, LN_EPS)

    q, k = queries + query_pe, keys + key_pe
    queries = queries + attention(p["cross_attn_token_to_image"], q, k, keys, num_heads)
    queries = layer_norm(p["norm2"], queries, LN_EPS)

    queries = queries + mlp(p["mlp"], queries, 2)
    queries = layer_norm(p["norm3"], queries, LN_EPS)

    q, k = queries + query_pe, keys + key_pe
    keys = keys + attention(p["cross_attn_image_to_token"], k, q, queries, num_heads,
                            key_valid=token_valid)
    keys = layer_norm(p["norm4"], keys, LN_EPS)
    return queries, keys


def two_way_transformer(p, image_embedding, image_pe, point_embedding, depth: int,
                        num_heads: int, *, token_valid=None):
    """image_embedding [B, H, W, C], image_pe [B or 1, H, W, C], point_embedding [B, N, C]
    -> (tokens [B, N, C], image tokens [B, H*W, C]).

    token_valid [B, N] bool or None: tokens marked False are never attended to, so a fixed
    buffer of prompt tokens gives what the valid ones alone give (training's correction loop)."""
    b, h, w, c = image_embedding.shape
    keys = image_embedding.reshape(b, h * w, c)
    key_pe = jnp.broadcast_to(image_pe.reshape(-1, h * w, c), keys.shape)
    queries = point_embedding
    for i in range(depth):
        queries, keys = two_way_block(p["layers"][str(i)], queries, keys, point_embedding,
                                      key_pe, num_heads, skip_first_pe=(i == 0),
                                      token_valid=token_valid)
    q, k = queries + point_embedding, keys + key_pe
    queries = queries + attention(p["final_attn_token_to_image"], q, k, keys, num_heads)
    queries = layer_norm(p["norm_final_attn"], queries, LN_EPS)
    return queries, keys
