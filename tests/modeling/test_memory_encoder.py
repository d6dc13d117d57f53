"""Memory encoder parity with the official `memory_encoder` and `_encode_new_memory` (our
`encode_memory`): the
encoder alone, the mask preparation (sigmoid or binarized per object), and SAM 2.1's
no-object embedding for objects scored absent, on a 2.0 and a 2.1 model."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch

from samv2_jax.modeling.memory_encoder import encode_memory, memory_encoder

import official
from conftest import converted_pair

TOL = 1e-4
SIZE = 256
E = SIZE // 16
MODELS = ("sam2_hiera_tiny", "sam2.1_hiera_tiny")
BINARIZE = ("++model.binarize_mask_from_pts_for_mem_enc=true",)


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _inputs(batch: int, seed: int):
    """Random stride-16 features and mask logits with both signs over large areas (a smooth
    random field), like real predicted masks, plus some pixels right at the boundary."""
    rng = np.random.default_rng(seed)
    pix = rng.normal(size=(batch, 256, E, E)).astype(np.float32)
    coarse = rng.normal(scale=8.0, size=(batch, 1, 8, 8)).astype(np.float32)
    logits = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(SIZE, SIZE),
                                             mode="bilinear", align_corners=False).numpy()
    logits = logits + rng.normal(scale=0.5, size=logits.shape).astype(np.float32)
    logits[:, :, :4, :4] = 0.0
    return pix, logits


@functools.partial(jax.jit, static_argnums=1)
def _encoder(p, cfg, pix, masks):
    return memory_encoder(p, cfg, pix, masks)


def _encode_new(params, cfg, pix, masks, scores, from_pts):
    out = encode_memory(params, cfg, pix, masks, scores, from_pts)
    return out["maskmem_features"], out["maskmem_pos_enc"]


@pytest.mark.parametrize("name", MODELS)
def test_memory_encoder_matches_official(name):
    torch_model, model = converted_pair(name, SIZE)
    pix, logits = _inputs(2, seed=1)
    masks = 20.0 / (1.0 + np.exp(-logits)) - 10.0  # what the encoder gets after scaling
    with torch.no_grad():
        out = torch_model.memory_encoder(torch.from_numpy(pix), torch.from_numpy(masks),
                                         skip_mask_sigmoid=True)
    feat, pos = _encoder(model.params["memory_encoder"], model.config,
                         pix.transpose(0, 2, 3, 1), masks[:, 0])
    err_f = official.rel_err(feat, _nhwc(out["vision_features"]))
    err_p = official.rel_err(pos, _nhwc(out["vision_pos_enc"][0]))
    print(f"{name}: features {err_f:.2e}, pos {err_p:.2e}")
    assert err_f < TOL and err_p < TOL


def _official_new_memory(torch_model, pix, logits, scores, from_pts: bool):
    feats = [torch.from_numpy(pix).flatten(2).permute(2, 0, 1)]
    with torch.no_grad():
        f, pos = torch_model._encode_new_memory(
            current_vision_feats=feats, feat_sizes=[(E, E)],
            pred_masks_high_res=torch.from_numpy(logits),
            object_score_logits=torch.from_numpy(scores), is_mask_from_pts=from_pts)
    return _nhwc(f), _nhwc(pos[0])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("binarize", [False, True])
def test_encode_memory_matches_official(name, binarize):
    """One batch mixes objects whose masks came from clicks and objects whose did not
    (the official call takes one flag per batch, so it runs once per flag), and objects
    scored present, absent and exactly on the boundary (0 counts as absent)."""
    _, model = converted_pair(name, SIZE)
    cfg = model.config
    if binarize:
        torch_model = official.build_official(name, SIZE, overrides=BINARIZE)
        cfg = cfg.replace(memory=dataclasses.replace(cfg.memory,
                                                     binarize_mask_from_pts_for_mem_enc=True))
    else:
        torch_model, _ = converted_pair(name, SIZE)
    assert torch_model.binarize_mask_from_pts_for_mem_enc == binarize
    pix, logits = _inputs(3, seed=2)
    scores = np.array([[2.5], [-1.0], [0.0]], np.float32)
    from_pts = np.array([True, False, True])
    by_flag = {flag: _official_new_memory(torch_model, pix, logits, scores, flag)
               for flag in (False, True)}
    want_f = np.stack([by_flag[bool(f)][0][i] for i, f in enumerate(from_pts)])
    want_p = by_flag[False][1]
    if binarize:  # the flag must matter, or this test could not tell the branches apart
        assert official.rel_err(by_flag[True][0], by_flag[False][0]) > 1e-2

    feat, pos = _encode_new(model.params, cfg, pix.transpose(0, 2, 3, 1), logits[:, 0], scores,
                            from_pts)
    err_f, err_p = official.rel_err(feat, want_f), official.rel_err(pos, want_p)
    print(f"{name} binarize={binarize}: features {err_f:.2e}, pos {err_p:.2e}")
    assert err_f < TOL and err_p < TOL


def test_no_obj_embed_spatial_changes_absent_objects_only():
    """2.1: an absent object's memory differs from a present one's by exactly the embedding;
    2.0 has no such embedding."""
    _, model = converted_pair("sam2.1_hiera_tiny", SIZE)
    pix, logits = _inputs(1, seed=3)
    pix, logits = np.repeat(pix, 2, 0), np.repeat(logits, 2, 0)
    scores = np.array([[1.0], [-1.0]], np.float32)
    feat, _ = _encode_new(model.params, model.config, pix.transpose(0, 2, 3, 1), logits[:, 0],
                          scores, np.array([False, False]))
    diff = np.asarray(feat[1] - feat[0])
    embed = np.asarray(model.params["no_obj_embed_spatial"]).reshape(-1)
    np.testing.assert_allclose(diff, np.broadcast_to(embed, diff.shape), atol=1e-5)
    _, model20 = converted_pair("sam2_hiera_tiny", SIZE)
    assert "no_obj_embed_spatial" not in model20.params
