"""Image encoder: Hiera trunk + FPN neck, and the image features the SAM heads consume.

`encode_image` is the one way an image (or a video frame) becomes features, for the image
predictor, the tracker and training alike.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samv2_jax.config import NeckConfig, SAM2Config
from samv2_jax.modeling.hiera import hiera
from samv2_jax.modeling.layers import conv1x1
from samv2_jax.modeling.position_encoding import sine_grid
from samv2_jax.modeling.transforms import resize_bilinear


def _upsample_2x(x, mode: str):
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if mode == "bilinear":
        b, h, w, c = x.shape
        return resize_bilinear(x, (2 * h, 2 * w), antialias=False)
    raise ValueError(f"unsupported fpn_interp_model {mode!r}")


def fpn_position_encoding(cfg: NeckConfig, feature):
    """The sine position encoding of one FPN level [B, H, W, d_model] (a constant)."""
    grid = sine_grid(feature.shape[1], feature.shape[2], cfg.d_model, cfg.pos_temperature)
    return jnp.broadcast_to(jnp.asarray(grid, feature.dtype), feature.shape[:3] + (cfg.d_model,))


def fpn_neck(p, cfg: NeckConfig, stage_outputs, *, with_pos: bool = True):
    """stage_outputs finest first -> (features, position encodings), finest first, scalp
    applied. `with_pos=False` leaves the encodings out (None): the finest is 256 x 256 x 256
    at 1024, seconds of host work at trace time for a constant nobody reads."""
    n = len(stage_outputs) - 1
    features = [None] * (n + 1)
    prev = None
    for i in range(n, -1, -1):  # coarse to fine
        lateral = conv1x1(p["convs"][str(n - i)]["conv"], stage_outputs[i])
        if i in cfg.fpn_top_down_levels and prev is not None:
            prev = lateral + _upsample_2x(prev.astype(jnp.float32), cfg.fpn_interp_model).astype(
                lateral.dtype)
            if cfg.fuse_type == "avg":
                prev = prev / 2
        else:
            prev = lateral
        features[i] = prev
    if cfg.scalp > 0:
        features = features[: -cfg.scalp]
    if not with_pos:
        return features, None
    return features, [fpn_position_encoding(cfg, f) for f in features]


@functools.partial(jax.jit, static_argnames=("cfg",))
def encode_image(params, cfg: SAM2Config, images):
    """Preprocessed images [B, S, S, 3] -> the features every SAM head reads.

    Official counterpart: `SAM2Base.forward_image` followed by `_prepare_backbone_features`.
    Returns
      image_embed     [B, E, E, C]  the stride-16 map (E = S / 16), no memory added yet;
      image_pos       [B, E, E, C]  its sine position encoding (memory attention uses it);
      high_res_feats  (stride 4, stride 8) maps already projected by the decoder's
                      conv_s0 / conv_s1, as the official model does.
    """
    enc = params["image_encoder"]
    # Compute in the params' dtype: bfloat16 params give a bfloat16 model (--dtype bfloat16).
    images = images.astype(enc["trunk"]["patch_embed"]["proj"]["weight"].dtype)
    return features_from_stages(params, cfg, hiera(enc["trunk"], cfg.trunk, images))


def features_from_stages(params, cfg: SAM2Config, stages):
    """The trunk's stage outputs -> `encode_image`'s dict (the FPN neck, the top level's
    position encoding, the decoder's projections of the two finer levels)."""
    features, _ = fpn_neck(params["image_encoder"]["neck"], cfg.neck, stages, with_pos=False)
    high_res = tuple(features[:-1])
    if cfg.decoder.use_high_res_features:
        dec = params["sam_mask_decoder"]
        high_res = (conv1x1(dec["conv_s0"], high_res[0]), conv1x1(dec["conv_s1"], high_res[1]))
    return {"image_embed": features[-1],
            "image_pos": fpn_position_encoding(cfg.neck, features[-1]),
            "high_res_feats": high_res}


def no_memory_features(params, cfg: SAM2Config, image_embed):
    """The stride-16 map of a frame decoded without memory: the learned "no memory" embedding
    added (official: the no-memory branch of `_prepare_memory_conditioned_features`, and the
    image predictor's `directly_add_no_mem_embed`)."""
    if not cfg.memory.directly_add_no_mem_embed:
        raise NotImplementedError("only directly_add_no_mem_embed=True (every official model) "
                                  "is supported")
    return image_embed + params["no_mem_embed"].reshape(-1).astype(image_embed.dtype)
