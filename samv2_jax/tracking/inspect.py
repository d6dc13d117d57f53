"""Looking inside a tracked frame: which memories each object attended to, and how much.

`track_step(..., intermediates=True)` adds `out["intermediates"]` (off by default, so the fast
path compiles without any of this):

- `mem_frame_idx` [O, S] / `mem_valid` [O, S]: the frame each spatial memory came from;
- `mem_is_prompt` [O, S]: whether it was a prompted memory;
- `ptr_frame_idx` [O, P] / `ptr_valid` [O, P]: the frames of the object pointers;
- `mem_mass` [L, O, S] / `ptr_mass` [L, O, P]: in each memory-attention layer, the share of
  the cross-attention weight (averaged over the frame's query tokens and the heads) that
  each memory frame's tokens and each pointer's tokens received; over the valid memories and
  pointers they sum to 1;
- `write_slot` [O] / `written` [O] / `as_prompt` [O]: where the frame's memory went.

The attention is re-run layer by layer here (the same pieces `memory_attention` uses) so the
weights can be summed; its output equals `memory_attention`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.layers import LN_EPS, layer_norm, linear
from samv2_jax.modeling.memory_attention import _heads, rope_attention
from samv2_jax.modeling.rope import apply_rope, apply_rope_frames, axial_cos_sin

_INPUT_POS_SCALE = 0.1


def key_mass(q, k, key_valid=None, chunk: int = 256):
    """[B, Nk]: the softmax weight each key gets, averaged over queries and heads (q [B, Nq,
    H, D], k [B, Nk, H, D]), over query chunks so the whole weight matrix is never held."""
    b, nq, h, d = q.shape
    q = q.astype(jnp.float32) * d ** -0.5
    k = k.astype(jnp.float32)
    chunk = chunk if nq % chunk == 0 else nq

    def one(qc):
        s = jnp.einsum("bqhd,bkhd->bhqk", qc, k)
        if key_valid is not None:
            s = jnp.where(key_valid[:, None, None, :], s, -jnp.inf)
        return jax.nn.softmax(s, axis=-1).sum(axis=(1, 2))

    qs = q.reshape(b, nq // chunk, chunk, h, d).transpose(1, 0, 2, 3, 4)
    return jax.lax.map(one, qs).sum(0) / (h * nq)


def _cross_key_mass(p, cfg: SAM2Config, h, keys, rope, num_k_rope, key_valid):
    """The cross-attention's queries and keys, as `rope_attention` forms them, -> mass."""
    heads = cfg.memory.attention_num_heads
    cos, sin = rope
    q = apply_rope(_heads(linear(p["q_proj"], h), heads), cos, sin)
    k = _heads(linear(p["k_proj"], keys), heads)
    if num_k_rope > 0:
        rotated = apply_rope_frames(k[:, :num_k_rope], cos, sin)
        k = rotated if num_k_rope == k.shape[1] else jnp.concatenate(
            [rotated, k[:, num_k_rope:]], 1)
    q = jnp.broadcast_to(q, (k.shape[0], *q.shape[1:]))
    return key_mass(q, k, key_valid)


def memory_attention_with_mass(p, cfg: SAM2Config, curr, curr_pos, memory, memory_pos,
                               num_obj_ptr_tokens: int, feat_hw, memory_valid=None):
    """`memory_attention` (inference), also returning the attention weight each memory token
    received in each layer: ([B, N, C], [layers, B, M])."""
    h_, w_ = feat_hw
    m = memory.shape[1]
    num_k_rope = m - num_obj_ptr_tokens
    heads = cfg.memory.attention_num_heads
    rope = axial_cos_sin(cfg.hidden_dim // heads, h_, w_, float(cfg.memory.rope_theta))
    if memory_valid is not None:
        keep = memory_valid[..., None]
        memory = jnp.where(keep, memory, 0).astype(memory.dtype)
        memory_pos = jnp.where(keep, memory_pos, 0).astype(memory_pos.dtype)
    x = curr + jnp.asarray(_INPUT_POS_SCALE, curr.dtype) * curr_pos
    masses = []
    for i in range(cfg.memory.attention_layers):
        lp = p["layers"][str(i)]
        h = layer_norm(lp["norm1"], x, LN_EPS)
        x = x + rope_attention(lp["self_attn"], h, h, h, heads, rope)
        h = layer_norm(lp["norm2"], x, LN_EPS)
        keys = memory + memory_pos
        masses.append(_cross_key_mass(lp["cross_attn_image"], cfg, h, keys, rope, num_k_rope,
                                      memory_valid))
        x = x + rope_attention(lp["cross_attn_image"], h, keys, memory, heads, rope,
                               num_k_rope, memory_valid)
        h = layer_norm(lp["norm3"], x, LN_EPS)
        x = x + linear(lp["linear2"], jax.nn.relu(linear(lp["linear1"], h)))
    x = jnp.broadcast_to(x, (memory.shape[0], *x.shape[1:]))
    return layer_norm(p["norm"], x, LN_EPS), jnp.stack(masses)


def attended(cfg: SAM2Config, bank, sel, mass, decision) -> dict:
    """The intermediates dict of one tracked frame (see the module docstring); `bank` is the
    bank the frame read from, `mass` [L, R, M] per memory token."""
    n = cfg.embedding_size ** 2
    r, s = sel.mem_slots.shape
    p = sel.ptr_slots.shape[1]
    rows = jnp.arange(r)[:, None]
    mem_rows = rows if sel.mem_rows is None else sel.mem_rows
    layers = mass.shape[0]
    mem_mass = mass[:, :, :s * n].reshape(layers, r, s, n).sum(-1)
    out = {
        "mem_frame_idx": bank.frame_idx[mem_rows, sel.mem_slots],
        "mem_valid": sel.mem_valid,
        "mem_is_prompt": sel.mem_tpos == 0,
        "mem_mass": mem_mass,
        "write_slot": decision.slot,
        "written": decision.write,
        "as_prompt": (jnp.zeros_like(decision.write) if decision.as_prompt is None
                      else decision.as_prompt),
    }
    if p:
        ptr_rows = rows if sel.ptr_rows is None else sel.ptr_rows
        split = (mass.shape[2] - s * n) // p
        out["ptr_frame_idx"] = bank.frame_idx[ptr_rows, sel.ptr_slots]
        out["ptr_valid"] = sel.ptr_valid
        out["ptr_mass"] = mass[:, :, s * n:].reshape(layers, r, p, split).sum(-1)
    return out
