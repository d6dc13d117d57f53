"""Prompt encoder: points / box corners -> sparse tokens, a mask -> a dense embedding.

Point labels: -1 padding ("not a point"), 0 negative, 1 positive, 2 box top-left, 3 box
bottom-right. Coordinates are pixels of the model's input square (`image_size`).
"""

from __future__ import annotations

import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.layers import LN2D_EPS, conv1x1, gelu, layer_norm, patchify_conv
from samv2_jax.modeling.position_encoding import random_fourier_encode, random_fourier_grid


def dense_pe(p, cfg: SAM2Config):
    """[1, E, E, C] positional encoding of the image-embedding grid."""
    e = cfg.embedding_size
    gauss = p["pe_layer"]["positional_encoding_gaussian_matrix"]
    return random_fourier_grid(gauss, e, e)[None]


def _encode_coords(p, cfg: SAM2Config, coords):
    # +0.5: a prompt at pixel (x, y) means that pixel's centre.
    xy01 = (coords + 0.5) / jnp.asarray([cfg.image_size, cfg.image_size], coords.dtype)
    return random_fourier_encode(p["pe_layer"]["positional_encoding_gaussian_matrix"], xy01)


def embed_points(p, cfg: SAM2Config, coords, labels, pad: bool):
    """coords [B, N, 2] (x, y), labels [B, N] int -> [B, N (+1 if pad), C]."""
    coords = coords.astype(jnp.float32)
    if pad:  # the decoder was trained with a padding token whenever there is no box
        b = coords.shape[0]
        coords = jnp.concatenate([coords, jnp.zeros((b, 1, 2), coords.dtype)], axis=1)
        labels = jnp.concatenate([labels, -jnp.ones((b, 1), labels.dtype)], axis=1)
    emb = _encode_coords(p, cfg, coords)
    lab = labels[..., None]
    emb = jnp.where(lab == -1, p["not_a_point_embed"]["weight"][0], emb)
    for i in range(4):
        emb = emb + jnp.where(lab == i, p["point_embeddings"][str(i)]["weight"][0], 0.0)
    return emb


def embed_boxes(p, cfg: SAM2Config, boxes):
    """boxes [B, 4] (x0, y0, x1, y1) -> [B, 2, C] corner tokens."""
    corners = _encode_coords(p, cfg, boxes.astype(jnp.float32).reshape(-1, 2, 2))
    return corners + jnp.stack(
        [p["point_embeddings"]["2"]["weight"][0], p["point_embeddings"]["3"]["weight"][0]]
    )


def embed_mask(p, masks):
    """masks [B, 4E, 4E] logits -> [B, E, E, C]."""
    seq = p["mask_downscaling"]
    x = masks[..., None].astype(jnp.float32)
    x = gelu(layer_norm(seq["1"], patchify_conv(seq["0"], x, 2), LN2D_EPS))
    x = gelu(layer_norm(seq["4"], patchify_conv(seq["3"], x, 2), LN2D_EPS))
    return conv1x1(seq["6"], x)


def prompt_encoder(p, cfg: SAM2Config, points=None, boxes=None, masks=None):
    """-> (sparse [B, N, C], dense [B, E, E, C]); B follows points, then boxes, then masks."""
    if points is not None:
        bs = points[0].shape[0]
    elif boxes is not None:
        bs = boxes.shape[0]
    elif masks is not None:
        bs = masks.shape[0]
    else:
        bs = 1
    sparse = [jnp.zeros((bs, 0, cfg.hidden_dim), jnp.float32)]
    if points is not None:
        sparse.append(embed_points(p, cfg, points[0], points[1], pad=boxes is None))
    if boxes is not None:
        sparse.append(embed_boxes(p, cfg, boxes))
    sparse = jnp.concatenate(sparse, axis=1)
    if masks is not None:
        dense = embed_mask(p, masks)
    else:
        e = cfg.embedding_size
        dense = jnp.broadcast_to(p["no_mask_embed"]["weight"][0], (bs, e, e, cfg.hidden_dim))
    return sparse, dense
