"""Memory encoder: fuses a frame's stride-16 features with its predicted mask into the small
(mem_dim-channel) memory map that later frames attend to, plus that map's position encoding.

The mask is brought down to the feature stride by strided convs, added to the projected
features, mixed by ConvNeXt-style blocks and projected to mem_dim.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.layers import LN2D_EPS, conv1x1, conv2d, gelu, layer_norm, linear
from samv2_jax.modeling.position_encoding import sine_grid
from samv2_jax.modeling.transforms import resize_bilinear


def _num_downsample_steps(cfg: SAM2Config) -> int:
    stride = cfg.memory.mask_downsampler_stride
    steps = round(math.log(cfg.backbone_stride) / math.log(stride))
    if stride ** steps != cfg.backbone_stride:
        raise ValueError(f"mask downsampler stride {stride} does not reach the backbone stride "
                         f"{cfg.backbone_stride} in whole steps")
    return steps


def mask_downsampler(p, cfg: SAM2Config, masks):
    """masks [B, S, S, 1] -> [B, S/16, S/16, hidden_dim]: (conv, LayerNorm2d, GELU) steps,
    each halving the side and quadrupling the channels, then a 1x1 projection."""
    m = cfg.memory
    steps = _num_downsample_steps(cfg)
    x = masks
    for k in range(steps):
        x = conv2d(p[str(3 * k)], x, stride=m.mask_downsampler_stride,
                   padding=m.mask_downsampler_padding)
        x = gelu(layer_norm(p[str(3 * k + 1)], x, LN2D_EPS))
    return conv1x1(p[str(3 * steps)], x)


def cx_block(p, x, kernel: int):
    """ConvNeXt block: depthwise conv, norm, 4x MLP with GELU, per-channel gamma, residual."""
    c = x.shape[-1]
    h = conv2d(p["dwconv"], x, padding=kernel // 2, groups=c)
    h = layer_norm(p["norm"], h, LN2D_EPS)
    h = linear(p["pwconv2"], gelu(linear(p["pwconv1"], h)))
    return x + p["gamma"].astype(h.dtype) * h


def memory_pos_enc(cfg: SAM2Config, features):
    """The sine grid of the memory map ([B, E, E, mem_dim]); depends on shapes only."""
    b, h, w, c = features.shape
    grid = jnp.asarray(sine_grid(h, w, c), features.dtype)
    return jnp.broadcast_to(grid, (b, h, w, c))


def memory_encoder(p, cfg: SAM2Config, pix_feat, masks):
    """pix_feat [B, E, E, C] raw stride-16 features (no no-memory embedding); masks [B, S, S]
    already scaled for the encoder (no sigmoid is applied here).

    Returns (maskmem_features, maskmem_pos_enc), both [B, E, E, mem_dim].
    """
    m = cfg.memory
    mask_feat = mask_downsampler(p["mask_downsampler"]["encoder"], cfg,
                                 masks[..., None].astype(pix_feat.dtype))
    x = conv1x1(p["pix_feat_proj"], pix_feat) + mask_feat
    for i in range(m.fuser_layers):
        x = cx_block(p["fuser"]["layers"][str(i)], x, m.fuser_kernel)
    if "out_proj" in p:  # absent when mem_dim equals the hidden width
        x = conv1x1(p["out_proj"], x)
    return x, memory_pos_enc(cfg, x)


def mask_for_memory(cfg: SAM2Config, high_res_masks, is_mask_from_pts):
    """Mask logits [B, S, S] -> the encoder's input: a sigmoid (or, for masks from clicks when
    the model asks for it, a hard 0/1 mask), then the fixed scale and bias."""
    m = cfg.memory
    probs = jax.nn.sigmoid(high_res_masks)
    if m.binarize_mask_from_pts_for_mem_enc:
        from_pts = jnp.broadcast_to(jnp.asarray(is_mask_from_pts, bool),
                                    high_res_masks.shape[:1])
        hard = (high_res_masks > 0).astype(high_res_masks.dtype)
        probs = jnp.where(from_pts[:, None, None], hard, probs)
    if m.sigmoid_scale_for_mem_enc != 1.0:
        probs = probs * m.sigmoid_scale_for_mem_enc
    if m.sigmoid_bias_for_mem_enc != 0.0:
        probs = probs + m.sigmoid_bias_for_mem_enc
    return probs


@functools.partial(jax.jit, static_argnames=("cfg",))
def encode_memory(params, cfg: SAM2Config, image_embed, masks, object_score_logits,
                  is_mask_from_pts):
    """A frame's new memory, per object, from its predicted masks.

    Official counterpart: `SAM2Base._encode_new_memory` (and, for masks given at low
    resolution, the video predictor's `_run_memory_encoder`, which first brings them to the
    input size bilinearly).
    image_embed [1 or O, E, E, C] the frame's raw stride-16 map (shared by all objects);
    masks [O, h, w] logits, at the input size or below it; object_score_logits [O, 1];
    is_mask_from_pts [O] or scalar bool (may be traced). With SAM 2.1's no-object embedding,
    objects judged absent get it added to every position of their memory.
    Returns {"maskmem_features", "maskmem_pos_enc"}, both [O, E, E, mem_dim].
    """
    o = masks.shape[0]
    s = cfg.image_size
    if masks.shape[-2:] != (s, s):
        masks = resize_bilinear(masks[..., None].astype(jnp.float32), (s, s))[..., 0]
    pix_feat = jnp.broadcast_to(image_embed, (o, *image_embed.shape[1:]))
    from_pts = jnp.broadcast_to(jnp.asarray(is_mask_from_pts, bool), (o,))
    features, pos = memory_encoder(params["memory_encoder"], cfg, pix_feat,
                                   mask_for_memory(cfg, masks, from_pts))
    if cfg.memory.no_obj_embed_spatial:
        absent = (object_score_logits.reshape(-1) <= 0).astype(features.dtype)
        embed = params["no_obj_embed_spatial"].reshape(-1).astype(features.dtype)
        features = features + absent[:, None, None, None] * embed
    return {"maskmem_features": features, "maskmem_pos_enc": pos}
