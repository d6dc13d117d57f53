"""Decoding many single-point prompts over one image."""

from __future__ import annotations

from samv2_jax.predictors.image import decode_prompts


def decode_points(params, cfg, feats, coords, labels, mask_input=None, *,
                  multimask_output: bool = True):
    return decode_prompts(params, cfg, feats, coords, labels, mask_input,
                          multimask_output=multimask_output)
