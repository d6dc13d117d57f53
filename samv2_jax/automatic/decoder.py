"""Decoding many prompts over one image: the mask decoder with its image-wide products
reassociated so that a batch of prompts costs about half the arithmetic.

Official counterpart: `MaskDecoder.forward` (via `SAM2ImagePredictor._predict`), exactly as
`samv2_jax.predictors.image.decode_prompts` computes it; the difference is only in the order
of the products. In every attention between the few prompt tokens (T per prompt: output tokens
and points) and the N image tokens (4096 at 1024), a projection of the image side is a
[N, C] x [C, C/2] product per prompt. Moved onto the token side it becomes [T, C/2] x [C/2, C],
and the image side is touched once, by the [N, C] x [C, H * T] logits product:

- token-to-image: q . (W_k x_n + b_k) = (W_k^T q) . x_n + q . b_k, and the last term is the
  same for every key, so softmax drops it; sum_n p_n (W_v x_n + b_v) = W_v (sum_n p_n x_n)
  + b_v since the weights sum to one;
- image-to-token: (W_q x_n + b_q) . k_t = x_n . (W_q^T k_t) + b_q . k_t, and the output
  projection of sum_t p_t v_t is sum_t p_t (W_o v_t), a rank-H*T product.

Where the image side is the same for all prompts (the first layer without a mask prompt: the
image embedding plus the one "no mask" embedding) its projections are made once for the batch.
Then each prompt costs ~0.96 GFLOP in the transformer at 1024 instead of ~2.7, and the results
agree with `decode_prompts` to float32 rounding (tested against it and the official).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.image_encoder import no_memory_features
from samv2_jax.modeling.layers import LN2D_EPS, LN_EPS, gelu, layer_norm, mlp
from samv2_jax.modeling.mask_decoder import dynamic_multimask
from samv2_jax.modeling.prompt_encoder import dense_pe, prompt_encoder
from samv2_jax.modeling.two_way_transformer import attention


def _heads(x, num_heads: int):
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def _split_weight(w, num_heads: int):
    """[C, D] projection weight -> [H, C, D / H] (the columns of each head)."""
    c, d = w.shape
    return w.reshape(c, num_heads, d // num_heads).transpose(1, 0, 2)


def _tokens_to_image(p, q_tok, k_img, v_img, num_heads: int):
    """Prompt tokens [B, T, C] attend to image tokens [B or 1, N, C] (keys `k_img`, values
    `v_img`); -> [B, T, C]. The official `Attention(q_tok, k_img, v_img)`."""
    q = _heads(q_tok @ p["q_proj"]["weight"] + p["q_proj"]["bias"], num_heads)  # [B,T,H,dh]
    dh = q.shape[-1]
    q = q * jnp.asarray(dh ** -0.5, q.dtype)
    if k_img.shape[0] == 1:  # shared image side: project it once
        k = _heads(k_img @ p["k_proj"]["weight"] + p["k_proj"]["bias"], num_heads)[0]
        v = _heads(v_img @ p["v_proj"]["weight"] + p["v_proj"]["bias"], num_heads)[0]
        logits = jnp.einsum("bthd,nhd->bhtn", q, k)
        w = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhtn,nhd->bthd", w, v)
    else:
        wk = _split_weight(p["k_proj"]["weight"], num_heads)  # [H, C, dh]
        qk = jnp.einsum("bthd,hcd->bhtc", q, wk)  # queries moved into the image's space
        b, h, t, c = qk.shape
        logits = jnp.einsum("bnc,bkc->bkn", k_img, qk.reshape(b, h * t, c))
        w = jax.nn.softmax(logits.reshape(b, h, t, -1), axis=-1)
        pooled = jnp.einsum("bkn,bnc->bkc", w.reshape(b, h * t, -1), v_img)  # [B, H*T, C]
        wv = _split_weight(p["v_proj"]["weight"], num_heads)
        out = jnp.einsum("bhtc,hcd->bthd", pooled.reshape(b, h, t, c), wv)
        out = out + _heads(p["v_proj"]["bias"], num_heads)
    out = out.reshape(*out.shape[:2], -1)
    return out @ p["out_proj"]["weight"] + p["out_proj"]["bias"]


def _image_to_tokens(p, q_img, k_tok, v_tok, num_heads: int):
    """Image tokens [B or 1, N, C] attend to prompt tokens [B, T, C]; -> [B, N, C].
    The official `Attention(q_img, k_tok, v_tok)`."""
    k = _heads(k_tok @ p["k_proj"]["weight"] + p["k_proj"]["bias"], num_heads)  # [B,T,H,dh]
    v = _heads(v_tok @ p["v_proj"]["weight"] + p["v_proj"]["bias"], num_heads)
    dh = k.shape[-1]
    scale = jnp.asarray(dh ** -0.5, k.dtype)
    b, t, h, _ = k.shape
    # Logits as [B, H, T, N]: the softmax over the T tokens then runs along a major axis,
    # vectorised over the image tokens (a reduction along a minor axis of 8 is slow on CPU).
    if q_img.shape[0] == 1:
        q = _heads(q_img @ p["q_proj"]["weight"] + p["q_proj"]["bias"], num_heads)[0]
        logits = jnp.einsum("bthd,nhd->bhtn", k * scale, q)
    else:
        wq = _split_weight(p["q_proj"]["weight"], num_heads)  # [H, C, dh]
        kq = jnp.einsum("bthd,hcd->bhtc", k * scale, wq)  # keys moved into the image's space
        c = kq.shape[-1]
        logits = jnp.einsum("bkc,bnc->bkn", kq.reshape(b, h * t, c), q_img)
        bias = jnp.einsum("bthd,hd->bht", k * scale, _heads(p["q_proj"]["bias"], num_heads))
        logits = logits.reshape(b, h, t, -1) + bias[..., None]
    w = jax.nn.softmax(logits, axis=2)  # [B, H, T, N]
    # The output projection of each (head, token) value, then a rank-H*T product.
    wo = p["out_proj"]["weight"]
    wo = wo.reshape(h, dh, wo.shape[-1])
    vo = jnp.einsum("bthd,hdc->bhtc", v, wo).reshape(b, h * t, -1)
    return jnp.einsum("bkn,bkc->bnc", w.reshape(b, h * t, -1), vo) + p["out_proj"]["bias"]


def _two_way(p, src, pos, tokens, depth: int, num_heads: int):
    """The official `TwoWayTransformer` over src [B or 1, N, C] (image + dense prompt), pos
    [1, N, C], tokens [B, T, C] -> (tokens [B, T, C], image tokens [B, N, C])."""
    queries, keys, query_pe = tokens, src, tokens
    for i in range(depth):
        lp = p["layers"][str(i)]
        if i == 0:
            queries = attention(lp["self_attn"], queries, queries, queries, num_heads)
        else:
            q = queries + query_pe
            queries = queries + attention(lp["self_attn"], q, q, queries, num_heads)
        queries = layer_norm(lp["norm1"], queries, LN_EPS)
        k_img = keys + pos
        queries = queries + _tokens_to_image(lp["cross_attn_token_to_image"],
                                             queries + query_pe, k_img, keys, num_heads)
        queries = layer_norm(lp["norm2"], queries, LN_EPS)
        queries = layer_norm(lp["norm3"], queries + mlp(lp["mlp"], queries, 2), LN_EPS)
        keys = keys + _image_to_tokens(lp["cross_attn_image_to_token"], k_img,
                                       queries + query_pe, queries, num_heads)
        keys = layer_norm(lp["norm4"], keys, LN_EPS)
    queries = queries + _tokens_to_image(p["final_attn_token_to_image"], queries + query_pe,
                                         keys + pos, keys, num_heads)
    return layer_norm(p["norm_final_attn"], queries, LN_EPS), keys


def _upscaled_masks(up, x, high_res, hyper):
    """The official output upscaling (two stride-2 transposed convolutions, the stride-8 and
    stride-4 features added) and the hypernetwork product -> masks [B, M, 4E, 4E].

    Each transposed convolution turns a pixel into a 2 x 2 block; here the blocks stay as
    trailing axes ([B, E, E, 2, 2, 2, 2, C]: row 4y + 2i + a, column 4x + 2j + b) and only
    the final masks are put in image order, instead of interleaving the wide feature maps
    twice. The high-resolution features (the same for every prompt) are permuted to match."""
    b, e = x.shape[0], x.shape[1]

    def blocks(p, x):  # [..., C] -> [..., 2, 2, O]
        k = p["weight"]  # [2, 2, C, O]
        y = x @ k.transpose(2, 0, 1, 3).reshape(k.shape[2], -1)
        return y.reshape(*x.shape[:-1], 2, 2, k.shape[-1]) + p["bias"]

    y = blocks(up["0"], x)  # [B, E, E, 2, 2, C1]
    if high_res is not None:
        feat_s0, feat_s1 = high_res
        y = y + feat_s1.reshape(1, e, 2, e, 2, -1).transpose(0, 1, 3, 2, 4, 5)
    y = gelu(layer_norm(up["1"], y, LN2D_EPS))
    z = blocks(up["3"], y)  # [B, E, E, 2, 2, 2, 2, C0]
    if high_res is not None:
        z = z + feat_s0.reshape(1, e, 2, 2, e, 2, 2, -1).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    z = gelu(z)
    masks = jnp.einsum("bpc,bmc->bmp", z.reshape(b, -1, z.shape[-1]), hyper)
    masks = masks.reshape(b, -1, e, e, 2, 2, 2, 2).transpose(0, 1, 2, 4, 6, 3, 5, 7)
    return masks.reshape(b, -1, 4 * e, 4 * e)


def _decode_group(dec, dcfg, feats, src, pos, tokens, multimask_output: bool, hw):
    """Transformer, upscaling and heads for one group of prompts -> (masks, ious)."""
    h, w = hw
    b, c = tokens.shape[0], tokens.shape[-1]
    n_masks = dcfg.num_multimask_outputs + 1
    s = 1 if dcfg.pred_obj_scores else 0
    hs, keys = _two_way(dec["transformer"], src, pos, tokens, dcfg.transformer_depth,
                        dcfg.transformer_num_heads)
    # Only the masks that are returned are formed (the first is not, with multimask output).
    wanted = range(1, n_masks) if multimask_output else range(n_masks)
    mask_tokens = hs[:, s + 1: s + 1 + n_masks]
    hyper = jnp.stack([mlp(dec["output_hypernetworks_mlps"][str(i)], mask_tokens[:, i], 3)
                       for i in wanted], axis=1)
    high_res = feats["high_res_feats"] if dcfg.use_high_res_features else None
    masks = _upscaled_masks(dec["output_upscaling"], keys.reshape(b, h, w, c), high_res, hyper)
    ious = mlp(dec["iou_prediction_head"], hs[:, s], dcfg.iou_head_depth,
               sigmoid_output=dcfg.iou_prediction_use_sigmoid)
    return masks, ious


# Prompts per pass through the decoder: a group's image-sized tensors ([G, N, C], 4 MB per
# prompt at 1024) stay in cache between the many elementwise passes over them.
GROUP = 4


@functools.partial(jax.jit, static_argnames=("cfg", "multimask_output", "group"))
def decode_points(params, cfg: SAM2Config, feats, coords, labels, mask_input=None, *,
                  multimask_output: bool = True, group: int = GROUP):
    """Prompts for one image -> (low-res mask logits [B, M, 4E, 4E], IoU predictions [B, M]);
    the same arguments and results as `samv2_jax.predictors.image.decode_prompts` (inference
    only), computed for a batch of prompts as described above, `group` prompts at a time."""
    pe = params["sam_prompt_encoder"]
    dec = params["sam_mask_decoder"]
    dcfg = cfg.decoder
    sparse, dense = prompt_encoder(pe, cfg, points=(coords, labels), boxes=None,
                                   masks=mask_input)
    if mask_input is None:
        dense = dense[:1]  # the same "no mask" embedding for every prompt
    embed = no_memory_features(params, cfg, feats["image_embed"])
    _, h, w, c = embed.shape
    src = (embed + dense).reshape(-1, h * w, c)
    pos = dense_pe(pe, cfg).reshape(1, h * w, c).astype(src.dtype)

    out_tokens = [dec["iou_token"]["weight"], dec["mask_tokens"]["weight"]]
    if dcfg.pred_obj_scores:
        out_tokens.insert(0, dec["obj_score_token"]["weight"])
    out_tokens = jnp.concatenate(out_tokens, axis=0)
    b = sparse.shape[0]
    tokens = jnp.concatenate([jnp.broadcast_to(out_tokens, (b, *out_tokens.shape)),
                              sparse.astype(out_tokens.dtype)], axis=1)
    run = functools.partial(_decode_group, dec, dcfg, feats, pos=pos,
                            multimask_output=multimask_output, hw=(h, w))
    if b > group and b % group == 0:
        def one(args):
            tok, sr = args
            return run(src=src if sr is None else sr, tokens=tok)

        grouped = tokens.reshape(b // group, group, *tokens.shape[1:])
        srcs = None if src.shape[0] == 1 else src.reshape(b // group, group, *src.shape[1:])
        masks, ious = jax.lax.map(one, (grouped, srcs))
        masks = masks.reshape(b, *masks.shape[2:])
        ious = ious.reshape(b, *ious.shape[2:])
    else:
        masks, ious = run(src=src, tokens=tokens)
    if multimask_output:
        return masks, ious[:, 1:]
    if dcfg.dynamic_multimask_via_stability:
        return dynamic_multimask(dcfg, masks, ious)
    return masks[:, :1], ious[:, :1]
