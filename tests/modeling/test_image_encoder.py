"""Image encoder parity: `encode_image` vs the official `SAM2Base.forward_image` (the base
level and its sine position encoding, the high-resolution levels after the decoder's conv_s0 /
conv_s1 projections), the no-memory features, and the FPN neck on its own (every level and
its position encoding)."""

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from samv2_jax.modeling.image_encoder import encode_image, fpn_neck, no_memory_features
from samv2_jax.modeling.transforms import preprocess_image

import official
from conftest import converted_pair, sample_image

TOL = 1e-4
NAMES = ["sam2.1_hiera_tiny", "sam2_hiera_large"]
SIZE = 256


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@functools.lru_cache(maxsize=2)
def _encoded(name):
    """(our encode_image, official forward_image, input) on two real-looking images."""
    torch_model, model = converted_pair(name, SIZE)
    x = np.stack([np.asarray(preprocess_image(sample_image(300, 451), SIZE)),
                  np.asarray(preprocess_image(sample_image(200, 200, seed=1)[::-1], SIZE))])
    with torch.no_grad():
        theirs = torch_model.forward_image(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    ours = encode_image(model.params, model.config, jnp.asarray(x))
    return ours, theirs, x


@pytest.mark.parametrize("name", NAMES)
def test_encode_image_matches_official(name):
    ours, theirs, _ = _encoded(name)
    assert set(ours) == {"image_embed", "image_pos", "high_res_feats"}
    assert len(ours["high_res_feats"]) == 2 and len(theirs["backbone_fpn"]) == 3
    assert len(theirs["vision_pos_enc"]) == 3
    # Level 0 / 1 are the decoder's projections (32 / 64 channels), level 2 the 256-d base.
    expected = [(2, 64, 64, 32), (2, 32, 32, 64), (2, 16, 16, 256)]
    levels = list(ours["high_res_feats"]) + [ours["image_embed"]]
    for level, (o, t) in enumerate(zip(levels, theirs["backbone_fpn"])):
        assert o.shape == expected[level], (level, o.shape)
        err = official.rel_err(o, _nhwc(t))
        assert err <= TOL, (name, "backbone_fpn", level, err)
    assert ours["image_pos"].shape == (2, 16, 16, 256)
    err = official.rel_err(ours["image_pos"], _nhwc(theirs["vision_pos_enc"][-1]))
    assert err <= TOL, (name, "vision_pos_enc", err)
    err = official.rel_err(ours["image_embed"], _nhwc(theirs["vision_features"]))
    assert err <= TOL, (name, "vision_features", err)
    # The two images of the batch are really different.
    assert not np.allclose(np.asarray(ours["image_embed"][0]),
                           np.asarray(ours["image_embed"][1]), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_no_memory_features_add_no_mem_embed(name):
    torch_model, model = converted_pair(name, SIZE)
    ours, theirs, _ = _encoded(name)
    assert model.config.memory.directly_add_no_mem_embed
    with torch.no_grad():
        expected = theirs["vision_features"] + torch_model.no_mem_embed.reshape(1, -1, 1, 1)
    err = official.rel_err(no_memory_features(model.params, model.config, ours["image_embed"]),
                           _nhwc(expected))
    assert err <= TOL, err
    # no_mem_embed is not zero here, so the test would notice it missing.
    assert official.rel_err(_nhwc(theirs["vision_features"]), _nhwc(expected)) > 1e-2


def _stage_outputs(model, batch=2, seed=0):
    """Random trunk-shaped stage outputs (finest first), NHWC and NCHW."""
    rng = np.random.default_rng(seed)
    chans = model.config.trunk.channel_list[::-1]  # finest first
    e = SIZE // 4
    xs = [rng.standard_normal((batch, e >> i, e >> i, c)).astype(np.float32)
          for i, c in enumerate(chans)]
    return xs, [torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in xs]


NECK_VARIANTS = {
    "as built": {},
    "bilinear, avg, all levels": dict(fpn_interp_model="bilinear", fuse_type="avg",
                                      fpn_top_down_levels=(0, 1, 2, 3)),
    "no scalp": dict(scalp=0),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("variant", list(NECK_VARIANTS))
def test_fpn_neck_matches_official(name, variant, monkeypatch):
    torch_model, model = converted_pair(name, SIZE)
    neck = torch_model.image_encoder.neck
    changes = NECK_VARIANTS[variant]
    cfg = dataclasses.replace(model.config.neck, **changes)
    # Switch the official neck the same way (restored after the test).
    if "fpn_interp_model" in changes:
        monkeypatch.setattr(neck, "fpn_interp_model", changes["fpn_interp_model"])
    if "fuse_type" in changes:
        monkeypatch.setattr(neck, "fuse_type", changes["fuse_type"])
    if "fpn_top_down_levels" in changes:
        monkeypatch.setattr(neck, "fpn_top_down_levels", list(changes["fpn_top_down_levels"]))
    xs, ts = _stage_outputs(model)
    with torch.no_grad():
        t_feats, t_pos = neck(ts)
    scalp = cfg.scalp
    if scalp:
        t_feats, t_pos = t_feats[:-scalp], t_pos[:-scalp]
    feats, pos = fpn_neck(model.params["image_encoder"]["neck"], cfg, [jnp.asarray(x) for x in xs])
    assert len(feats) == len(t_feats) == 4 - scalp and len(pos) == len(t_pos)
    for level, (o, t) in enumerate(zip(feats, t_feats)):
        err = official.rel_err(o, _nhwc(t))
        assert err <= TOL, (variant, level, err)
    for level, (o, t) in enumerate(zip(pos, t_pos)):
        err = official.rel_err(o, _nhwc(t))
        assert err <= TOL, (variant, "pos", level, err)


def test_fpn_neck_top_down_levels_matter():
    """Guard for the test above: the variants really change the neck's output."""
    _, model = converted_pair("sam2.1_hiera_tiny", SIZE)
    xs, _ = _stage_outputs(model)
    p = model.params["image_encoder"]["neck"]
    base, _ = fpn_neck(p, model.config.neck, [jnp.asarray(x) for x in xs])
    cfg = dataclasses.replace(model.config.neck, **NECK_VARIANTS["bilinear, avg, all levels"])
    other, _ = fpn_neck(p, cfg, [jnp.asarray(x) for x in xs])
    for a, b in zip(base, other):
        assert official.rel_err(a, b) > 1e-3
