"""The SAM heads as the training loop calls them: a fixed-size buffer of prompt points.

The correction loop adds one click per step, so the number of prompt tokens grows from step
to step; the official re-runs the decoder on the longer prompt each time. Here every step
runs the same program over a buffer of `P` point slots with a validity mask: masked tokens
are left out of every attention over prompt tokens, which gives exactly what the valid
points alone give (attention does not depend on token order). Whether the decoder returns
three masks or one also depends on the (traced) number of points, so it is a traced choice
here; one-mask outputs are repeated into the three slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.layers import linear, mlp
from samv2_jax.modeling.mask_decoder import predict_masks
from samv2_jax.modeling.prompt_encoder import dense_pe, embed_mask, embed_points
from samv2_jax.modeling.transforms import resize_bilinear
from samv2_jax.tracking.step import NO_OBJ_SCORE


def use_multimask(cfg: SAM2Config, is_init_cond, num_points):
    """Traced form of the official `SAM2Base._use_multimask`."""
    m = cfg.memory
    if not m.multimask_output_in_sam:
        return jnp.asarray(False)
    frame_ok = jnp.asarray(is_init_cond) | m.multimask_output_for_tracking
    in_range = (m.multimask_min_pt_num <= num_points) & (num_points <= m.multimask_max_pt_num)
    return frame_ok & in_range


def object_pointer(params, cfg: SAM2Config, token, object_score_logits):
    """The object pointer of an output token; absent objects get the learned no-object
    pointer (as `samv2_jax.tracking.step.sam_heads` computes it)."""
    m = cfg.memory
    ptr = mlp(params["obj_ptr_proj"], token, 3) if m.use_mlp_for_obj_ptr_proj else linear(
        params["obj_ptr_proj"], token)
    if cfg.decoder.pred_obj_scores:
        if m.soft_no_obj_ptr:
            present = jax.nn.sigmoid(object_score_logits)
        else:
            present = (object_score_logits > 0).astype(ptr.dtype)
        if m.fixed_no_obj_ptr:
            ptr = present * ptr
        ptr = ptr + (1 - present) * params["no_obj_ptr"].reshape(1, -1).astype(ptr.dtype)
    return ptr


def buffered_sam_heads(params, cfg: SAM2Config, pix_feat, high_res_feats, coords, labels,
                       point_valid, *, is_init_cond, mask_prompt=None, use_mask_prompt=True,
                       single_mask=False):
    """Prompt encoder + mask decoder over a buffer of prompt points, for every object.

    Official counterpart: `SAM2Base._forward_sam_heads` (training mode) on the valid points.
    pix_feat [O, E, E, C]; coords [O, P, 2] input pixels, labels [O, P]; point_valid [P] bool
    (the same slots for every object); mask_prompt [O, 4E, 4E] logits or None, used where
    the traced `use_mask_prompt` holds (else the learned no-mask embedding). No valid point
    is the official "no points" case (two padding tokens). A traced `single_mask` forces
    the one-mask output (the decoder call of a mask taken as output). Returns the tracking
    step's dict with three mask slots ("low_res_multimasks" [O, 3, 4E, 4E], "ious"
    [O, 3]) plus "multimask" (a traced bool: False means slot 0 repeated).
    """
    o, p = coords.shape[:2]
    pe = params["sam_prompt_encoder"]
    point_valid = jnp.asarray(point_valid, bool)
    n_points = point_valid.sum()
    # Two padding tokens close the buffer: the official always appends one, and a prompt
    # without points starts from one more.
    pad_xy = jnp.zeros((o, 2, 2), jnp.float32)
    pad_lab = -jnp.ones((o, 2), jnp.int32)
    labels = jnp.where(point_valid[None], labels, -1).astype(jnp.int32)
    sparse = embed_points(pe, cfg, jnp.concatenate([coords.astype(jnp.float32), pad_xy], 1),
                          jnp.concatenate([labels, pad_lab], 1), pad=False)
    token_valid = jnp.concatenate([point_valid, jnp.asarray([True]), (n_points == 0)[None]])
    e = cfg.embedding_size
    dense = jnp.broadcast_to(pe["no_mask_embed"]["weight"][0], (o, e, e, cfg.hidden_dim))
    if mask_prompt is not None:
        dense = jnp.where(use_mask_prompt, embed_mask(pe, mask_prompt), dense)
    dec_cfg = cfg.decoder
    masks, ious, tokens, obj = predict_masks(
        params["sam_mask_decoder"], dec_cfg, pix_feat, dense_pe(pe, cfg), sparse,
        dense.astype(pix_feat.dtype), high_res_feats,
        sparse_valid=jnp.broadcast_to(token_valid, (o, p + 2)))
    multimask = use_multimask(cfg, is_init_cond, n_points) & ~jnp.asarray(single_mask)
    k = dec_cfg.num_multimask_outputs
    low = jnp.where(multimask, masks[:, 1:], jnp.repeat(masks[:, :1], k, axis=1))
    ious = jnp.where(multimask, ious[:, 1:], jnp.repeat(ious[:, :1], k, axis=1))
    if dec_cfg.pred_obj_scores:
        low = jnp.where((obj > 0)[:, :, None, None], low, NO_OBJ_SCORE)
    low = low.astype(jnp.float32)
    ious = ious.astype(jnp.float32)
    best = jnp.where(multimask, jnp.argmax(ious, axis=-1), 0)
    low_best = jnp.take_along_axis(low, best[:, None, None, None], axis=1)
    s = cfg.image_size
    high_best = resize_bilinear(low_best.transpose(0, 2, 3, 1), (s, s)).transpose(0, 3, 1, 2)
    if dec_cfg.use_multimask_token_for_obj_ptr:
        multi_token = jnp.take_along_axis(tokens[:, 1:], best[:, None, None], axis=1)[:, 0]
        token = jnp.where(multimask, multi_token, tokens[:, 0])
    else:
        token = tokens[:, 0]
    return {
        "low_res_multimasks": low, "ious": ious, "multimask": multimask,
        "pred_masks": low_best, "pred_masks_high_res": high_best,
        "obj_ptr": object_pointer(params, cfg, token, obj),
        "object_score_logits": obj.astype(jnp.float32),
    }
