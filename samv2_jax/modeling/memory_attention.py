"""Memory attention: the current frame's features attend to themselves and to the memory bank
(spatial memories of earlier frames plus object-pointer tokens), conditioning the frame on
what was tracked before.

Every official config builds it the same way, so those choices are constants here: pre-norm
layers of RoPE self-attention, RoPE cross-attention with the memory's position encoding
added to its keys only, and a ReLU feed-forward; the queries' position encoding enters once,
scaled by 0.1, at the input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.layers import LN_EPS, dot_product_attention, layer_norm, linear
from samv2_jax.modeling.rope import apply_rope, apply_rope_frames, axial_cos_sin

_INPUT_POS_SCALE = 0.1


def _heads(x, num_heads: int):
    return x.reshape(*x.shape[:2], num_heads, x.shape[-1] // num_heads)


def dropout(x, rate: float, key):
    """Inverted dropout (training only); rate 0 or key None: x unchanged."""
    if rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def _attention_with_dropout(q, k, v, key_valid, rate: float, key):
    """Softmax attention whose weights get dropout, as torch's scaled_dot_product_attention
    with dropout_p; queries run in chunks so the weights of a long memory stay small."""
    b, nq, h, d = q.shape
    q = q * jnp.asarray(d ** -0.5, q.dtype)

    def attend(qc, kc):
        logits = jnp.einsum("bqhd,bkhd->bhqk", qc, k).astype(jnp.float32)
        if key_valid is not None:
            logits = jnp.where(key_valid[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        w = dropout(jax.nn.softmax(logits, axis=-1), rate, kc).astype(v.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", w, v)

    chunk = 256
    if nq % chunk or nq * k.shape[1] <= (1 << 21):
        return attend(q, key)
    qs = q.reshape(b, nq // chunk, chunk, h, d).transpose(1, 0, 2, 3, 4)
    keys = jax.random.split(key, nq // chunk)
    out = jax.lax.map(lambda t: attend(*t), (qs, keys))
    return out.transpose(1, 0, 2, 3, 4).reshape(b, nq, h, v.shape[-1])


def rope_attention(p, q, k, v, num_heads: int, rope, num_k_rope: int | None = None,
                   key_valid=None, *, dropout_rate: float = 0.0, key=None):
    """Attention with axial RoPE on the queries and on the first `num_k_rope` keys.

    rope: (cos, sin) for the query grid. Keys longer than the queries are whole frames of
    that grid, each rotated like the queries; keys past `num_k_rope` (object pointers) are
    left as they are. num_k_rope None rotates every key. `dropout_rate` with a `key`
    drops attention weights (training).
    """
    drop = dropout_rate > 0.0 and key is not None
    cos, sin = rope
    q = _heads(linear(p["q_proj"], q), num_heads)
    k = _heads(linear(p["k_proj"], k), num_heads)
    wv, bv = p["v_proj"]["weight"], p["v_proj"]["bias"]  # [in, out], [out]
    d_in, d_out = wv.shape
    # Attention weights sum to one, so projecting the values after attending gives the same
    # result; when the values are narrower than the heads (64-wide memories, 256-wide
    # heads) that makes the weighted sum, the costliest product here, several times cheaper.
    # (Dropped weights no longer sum to one: then the values are projected first.)
    late_v = d_in * num_heads < d_out and not drop
    if late_v:
        v = jnp.broadcast_to(v[:, :, None, :], (*v.shape[:2], num_heads, d_in))
    else:
        v = _heads(linear(p["v_proj"], v), num_heads)
    q = apply_rope(q, cos, sin)
    if q.shape[0] != k.shape[0]:  # queries shared by every object (see memory_attention)
        q = jnp.broadcast_to(q, (k.shape[0], *q.shape[1:]))
    n_rope = k.shape[1] if num_k_rope is None else num_k_rope
    if n_rope > 0:
        rotated = apply_rope_frames(k[:, :n_rope], cos, sin)
        k = rotated if n_rope == k.shape[1] else jnp.concatenate([rotated, k[:, n_rope:]], 1)
    if drop:
        out = _attention_with_dropout(q, k, v, key_valid, dropout_rate, key)
    else:
        out = dot_product_attention(q, k, v, key_valid=key_valid)
    if late_v:
        dh = d_out // num_heads
        w = jnp.asarray(wv).reshape(d_in, num_heads, dh)
        out = jnp.einsum("bnhi,hid->bnhd", out, w.transpose(1, 0, 2).astype(out.dtype))
        out = out + jnp.asarray(bv).reshape(num_heads, dh).astype(out.dtype)
    return linear(p["out_proj"], out.reshape(*out.shape[:2], -1))


def memory_attention_layer(p, cfg: SAM2Config, x, memory, memory_pos, rope, num_k_rope: int,
                           memory_valid, *, dropout_rate: float = 0.0, key=None):
    """One pre-norm layer. The queries' PE is not added here (it entered at the input);
    self-attention positions come from RoPE alone. `dropout_rate` with a `key`: the
    official training dropout (attention weights, each residual branch, the feed-forward
    hidden layer)."""
    heads = cfg.memory.attention_num_heads
    ks = [None] * 6 if key is None else list(jax.random.split(key, 6))
    r = dropout_rate
    h = layer_norm(p["norm1"], x, LN_EPS)
    h = rope_attention(p["self_attn"], h, h, h, heads, rope, dropout_rate=r, key=ks[0])
    x = x + dropout(h, r, ks[1])

    h = layer_norm(p["norm2"], x, LN_EPS)
    h = rope_attention(p["cross_attn_image"], h, memory + memory_pos, memory, heads, rope,
                       num_k_rope, memory_valid, dropout_rate=r, key=ks[2])
    x = x + dropout(h, r, ks[3])

    h = layer_norm(p["norm3"], x, LN_EPS)
    h = linear(p["linear2"], dropout(jax.nn.relu(linear(p["linear1"], h)), r, ks[4]))
    return x + dropout(h, r, ks[5])


def memory_attention(p, cfg: SAM2Config, curr, curr_pos, memory, memory_pos,
                     num_obj_ptr_tokens: int, feat_hw: tuple[int, int], memory_valid=None, *,
                     dropout_rate: float = 0.0, key=None, remat_policy=None):
    """Condition the current frame on the memory bank.

    curr, curr_pos: [B, N, C] with N = h * w tokens of the current frame, row-major; or
        [1, N, C] when every object tracks the same frame: the first layer's self-attention
        (identical for all objects) then runs once instead of B times.
    memory, memory_pos: [B, M, mem_dim]; the first M - num_obj_ptr_tokens tokens are whole
        frames of N spatial tokens, the last num_obj_ptr_tokens are object pointers.
    memory_valid: [B, M] bool or None; False tokens are left out of the attention, so a
        padded bank gives what the official model gives on its valid tokens alone.
    num_obj_ptr_tokens and feat_hw are static. Returns [B, N, C].
    Training hooks (the defaults are inference): `dropout_rate` with a `key` (each object
    then gets its own dropout, so the shared first layer runs per object); `remat_policy` (a
    `jax.checkpoint_policies` member) recomputes each layer in the backward pass.
    """
    h, w = feat_hw
    n, m = curr.shape[1], memory.shape[1]
    if n != h * w:
        raise ValueError(f"curr has {n} tokens but feat_hw {feat_hw} has {h * w}")
    num_k_rope = m - num_obj_ptr_tokens
    if num_k_rope < 0 or num_k_rope % n:
        raise ValueError(f"{m} memory tokens less {num_obj_ptr_tokens} object pointers are not "
                         f"whole frames of {n} tokens")
    head_dim = cfg.hidden_dim // cfg.memory.attention_num_heads
    rope = axial_cos_sin(head_dim, h, w, float(cfg.memory.rope_theta))
    if memory_valid is not None:
        # Zero the padding so that whatever it holds (even NaN) cannot leak through 0 * x.
        keep = memory_valid[..., None]
        memory = jnp.where(keep, memory, 0).astype(memory.dtype)
        memory_pos = jnp.where(keep, memory_pos, 0).astype(memory_pos.dtype)

    x = curr + jnp.asarray(_INPUT_POS_SCALE, curr.dtype) * curr_pos
    use_dropout = dropout_rate > 0.0 and key is not None
    if use_dropout:
        x = jnp.broadcast_to(x, (memory.shape[0], *x.shape[1:]))
    n_layers = cfg.memory.attention_layers
    keys = jax.random.split(key, n_layers) if use_dropout else [None] * n_layers
    for i in range(n_layers):
        def layer(lp, x, memory, memory_pos, memory_valid, k):
            return memory_attention_layer(lp, cfg, x, memory, memory_pos, rope, num_k_rope,
                                          memory_valid, dropout_rate=dropout_rate, key=k)

        if remat_policy is not None:
            layer = jax.checkpoint(layer, policy=remat_policy)
        x = layer(p["layers"][str(i)], x, memory, memory_pos, memory_valid, keys[i])
    x = jnp.broadcast_to(x, (memory.shape[0], *x.shape[1:]))
    return layer_norm(p["norm"], x, LN_EPS)
