"""Mask decoder: output tokens + prompt tokens run through the two-way transformer against the
image embedding; hypernetwork MLPs turn mask tokens into per-pixel mask logits over an
upscaled (and, in SAM 2, high-resolution-fused) feature map."""

from __future__ import annotations

import jax.numpy as jnp

from samv2_jax.config import MaskDecoderConfig
from samv2_jax.modeling.layers import LN2D_EPS, conv_transpose_2x2, gelu, layer_norm, linear, mlp
from samv2_jax.modeling.two_way_transformer import two_way_transformer


def stability_scores(mask_logits, delta: float):
    """IoU between the masks thresholded at +delta and -delta, over the last two axes."""
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


def dynamic_multimask(cfg: MaskDecoderConfig, all_masks, all_ious):
    """Single-mask output, unless its stability is low: then the best of the multimask outputs."""
    best = jnp.argmax(all_ious[:, 1:], axis=-1)
    best_masks = jnp.take_along_axis(all_masks[:, 1:], best[:, None, None, None], axis=1)
    best_ious = jnp.take_along_axis(all_ious[:, 1:], best[:, None], axis=1)
    single_masks, single_ious = all_masks[:, :1], all_ious[:, :1]
    stable = stability_scores(single_masks, cfg.dynamic_multimask_stability_delta)
    stable = stable >= cfg.dynamic_multimask_stability_thresh  # [B, 1]
    masks = jnp.where(stable[:, :, None, None], single_masks, best_masks)
    ious = jnp.where(stable, single_ious, best_ious)
    return masks, ious


def predict_masks(p, cfg: MaskDecoderConfig, image_embeddings, image_pe, sparse, dense,
                  high_res_features=None, *, sparse_valid=None):
    """All mask tokens: -> (masks [B, T, 4H, 4W], ious [B, T], mask tokens [B, T, C],
    object score logits [B, 1]) with T = num_multimask_outputs + 1.

    sparse_valid [B, N] bool or None: prompt tokens to leave out (a padded prompt buffer)."""
    num_mask_tokens = cfg.num_multimask_outputs + 1
    tokens = [p["iou_token"]["weight"], p["mask_tokens"]["weight"]]
    if cfg.pred_obj_scores:
        tokens.insert(0, p["obj_score_token"]["weight"])
    s = 1 if cfg.pred_obj_scores else 0
    out_tokens = jnp.concatenate(tokens, axis=0)
    b = sparse.shape[0]
    tokens = jnp.concatenate(
        [jnp.broadcast_to(out_tokens, (b, *out_tokens.shape)), sparse.astype(out_tokens.dtype)],
        axis=1)

    # One image may serve several prompt sets: broadcast it along the prompt batch.
    src = image_embeddings + dense
    src = jnp.broadcast_to(src, (b, *src.shape[1:]))
    _, h, w, c = src.shape
    token_valid = None
    if sparse_valid is not None:  # the output tokens always take part
        token_valid = jnp.concatenate(
            [jnp.ones((b, out_tokens.shape[0]), bool), jnp.asarray(sparse_valid, bool)], axis=1)
    hs, src = two_way_transformer(p["transformer"], src, image_pe, tokens,
                                  cfg.transformer_depth, cfg.transformer_num_heads,
                                  token_valid=token_valid)
    iou_token_out = hs[:, s]
    mask_tokens_out = hs[:, s + 1: s + 1 + num_mask_tokens]

    src = src.reshape(b, h, w, c)
    up = p["output_upscaling"]
    if cfg.use_high_res_features:
        feat_s0, feat_s1 = high_res_features
        x = gelu(layer_norm(up["1"], conv_transpose_2x2(up["0"], src) + feat_s1, LN2D_EPS))
        x = gelu(conv_transpose_2x2(up["3"], x) + feat_s0)
    else:
        x = gelu(layer_norm(up["1"], conv_transpose_2x2(up["0"], src), LN2D_EPS))
        x = gelu(conv_transpose_2x2(up["3"], x))

    hyper = jnp.stack(
        [mlp(p["output_hypernetworks_mlps"][str(i)], mask_tokens_out[:, i], 3)
         for i in range(num_mask_tokens)], axis=1)
    masks = jnp.einsum("btc,bhwc->bthw", hyper, x)

    ious = mlp(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth,
               sigmoid_output=cfg.iou_prediction_use_sigmoid)
    if cfg.pred_obj_scores:
        head = p["pred_obj_score_head"]
        obj = mlp(head, hs[:, 0], 3) if cfg.pred_obj_scores_mlp else linear(head, hs[:, 0])
    else:
        obj = jnp.full((b, 1), 10.0, ious.dtype)
    return masks, ious, mask_tokens_out, obj


def mask_decoder(p, cfg: MaskDecoderConfig, image_embeddings, image_pe, sparse, dense,
                 multimask_output: bool, high_res_features=None, training: bool = False):
    """-> (masks [B, M, 4H, 4W], ious [B, M], sam tokens [B, M', C], object scores [B, 1]).

    M is 3 with multimask_output, else 1 (chosen by stability when that option is on and
    not training)."""
    masks, ious, mask_tokens_out, obj = predict_masks(
        p, cfg, image_embeddings, image_pe, sparse, dense, high_res_features)
    if multimask_output:
        out_masks, out_ious = masks[:, 1:], ious[:, 1:]
    elif cfg.dynamic_multimask_via_stability and not training:
        out_masks, out_ious = dynamic_multimask(cfg, masks, ious)
    else:
        out_masks, out_ious = masks[:, :1], ious[:, :1]
    if multimask_output and cfg.use_multimask_token_for_obj_ptr:
        sam_tokens = mask_tokens_out[:, 1:]
    else:
        sam_tokens = mask_tokens_out[:, :1]
    return out_masks, out_ious, sam_tokens, obj
