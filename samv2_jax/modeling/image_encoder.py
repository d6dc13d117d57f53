"""Image encoder: Hiera trunk + FPN neck, and the image features the SAM heads consume.

`forward_image` mirrors the official backbone output (features and sine position encodings per
level, finest first); `image_features` is what the image predictor keeps per image.
"""

from __future__ import annotations

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


def fpn_neck(p, cfg: NeckConfig, stage_outputs):
    """stage_outputs finest first -> (features, position encodings), finest first, scalp applied."""
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
    pos = [
        jnp.broadcast_to(
            jnp.asarray(sine_grid(f.shape[1], f.shape[2], cfg.d_model, cfg.pos_temperature),
                        f.dtype), f.shape[:3] + (cfg.d_model,))
        for f in features
    ]
    if cfg.scalp > 0:
        features, pos = features[: -cfg.scalp], pos[: -cfg.scalp]
    return features, pos


def forward_image(params, cfg: SAM2Config, images):
    """images [B, S, S, 3] -> dict like the official `forward_image` (channels-last).

    `backbone_fpn` holds the finest levels already projected by the decoder's conv_s0/conv_s1,
    as the official model does, and the base (stride-16) level last.
    """
    enc = params["image_encoder"]
    # Compute in the params' dtype: bfloat16 params give a bfloat16 model (--dtype bfloat16).
    images = images.astype(enc["trunk"]["patch_embed"]["proj"]["weight"].dtype)
    stages = hiera(enc["trunk"], cfg.trunk, images)
    features, pos = fpn_neck(enc["neck"], cfg.neck, stages)
    if cfg.decoder.use_high_res_features:
        dec = params["sam_mask_decoder"]
        features = list(features)
        features[0] = conv1x1(dec["conv_s0"], features[0])
        features[1] = conv1x1(dec["conv_s1"], features[1])
    return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}


def image_features(params, cfg: SAM2Config, images):
    """What a predictor stores per image: the stride-16 embedding (with the "no memory"
    embedding added, as for a frame without memory) and the two high-resolution maps."""
    out = forward_image(params, cfg, images)
    embed = out["backbone_fpn"][-1]
    if cfg.memory.directly_add_no_mem_embed:
        embed = embed + params["no_mem_embed"].reshape(-1).astype(embed.dtype)
    return {"image_embed": embed, "high_res_feats": tuple(out["backbone_fpn"][:-1])}
