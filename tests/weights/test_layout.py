"""The tensor list derived from a config is exactly the official model's, and layouts invert."""

import dataclasses

import jax
import numpy as np
import pytest

from samv2_jax.config import PRESETS, config_from_state_dict, get_config
from samv2_jax.weights import layout as P

import official


@pytest.mark.parametrize("name", official.MODEL_NAMES)
def test_shapes_match_official_model(name):
    model = official.build_official(name, image_size=256)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    cfg = get_config(name, image_size=256)
    expected = P.official_param_shapes(cfg)
    assert set(expected) - set(got) == set(), "keys we expect that the official model lacks"
    assert set(got) - set(expected) == set(), "official keys we do not know"
    wrong = {k: (expected[k], got[k]) for k in got if expected[k] != got[k]}
    assert wrong == {}
    # the checkpoint's model is recognised from its tensors alone
    inferred = config_from_state_dict(got, image_size=256)
    assert inferred == cfg
    # every official key has exactly one layout rule
    for key in got:
        assert len(P.matching_rules(key)) == 1, key


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_key_has_exactly_one_rule(name):
    for key in P.official_param_shapes(PRESETS[name]):
        rules = P.matching_rules(key)
        assert len(rules) == 1, (key, [r.pattern for r in rules])


def test_layout_round_trip_on_official_tensors():
    sd = official.official_state_dict("sam2.1_hiera_tiny", image_size=256)
    layouts = set()
    for key, x in sd.items():
        y = P.to_jax_layout(key, x)
        layouts.add(P.rule_for(key).layout)
        back = P.to_torch_layout(key, y)
        assert back.shape == x.shape and np.array_equal(back, x), key
    assert layouts == set(P.LAYOUTS), "every layout is exercised by a real model"


def test_layout_rules_move_axes_as_documented():
    rng = np.random.default_rng(0)
    lin = rng.standard_normal((6, 4))
    got = P.to_jax_layout("image_encoder.trunk.blocks.0.attn.qkv.weight", lin)
    assert np.array_equal(got, lin.T)
    conv = rng.standard_normal((8, 3, 7, 5))  # O I H W
    got = P.to_jax_layout("image_encoder.trunk.patch_embed.proj.weight", conv)
    assert got.shape == (7, 5, 3, 8) and got[2, 4, 1, 6] == conv[6, 1, 2, 4]
    dw = rng.standard_normal((16, 1, 7, 7))
    got = P.to_jax_layout("memory_encoder.fuser.layers.0.dwconv.weight", dw)
    assert got.shape == (7, 7, 1, 16) and got[1, 2, 0, 5] == dw[5, 0, 1, 2]
    convt = rng.standard_normal((8, 4, 2, 2))  # in out kh kw
    got = P.to_jax_layout("sam_mask_decoder.output_upscaling.3.weight", convt)
    assert got.shape == (2, 2, 8, 4) and got[1, 0, 7, 2] == convt[7, 2, 1, 0]
    pos = rng.standard_normal((1, 5, 3, 4))
    got = P.to_jax_layout("image_encoder.trunk.pos_embed", pos)
    assert got.shape == (1, 3, 4, 5) and got[0, 2, 1, 4] == pos[0, 4, 2, 1]
    tok = rng.standard_normal((4, 256))
    assert P.to_jax_layout("sam_mask_decoder.mask_tokens.weight", tok) is tok
    # the sequential mask downsampler: convs at 0, 3, 6, ..., norms at 1, 4, 7, ...
    assert P.rule_for("memory_encoder.mask_downsampler.encoder.12.weight").layout == "conv"
    assert P.rule_for("memory_encoder.mask_downsampler.encoder.10.weight").layout == "keep"


def test_unknown_key_and_wrong_rank_raise():
    with pytest.raises(ValueError, match="image_encoder.trunk.blocks.0.attn.qkvz.weight"):
        P.to_jax_layout("image_encoder.trunk.blocks.0.attn.qkvz.weight", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not_a_model_key"):
        P.to_torch_layout("not_a_model_key", np.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        P.to_jax_layout("obj_ptr_tpos_proj.weight", np.zeros((2, 2, 2)))


def test_dropped_keys_is_explicit_and_empty_for_official_models():
    assert isinstance(P.DROPPED_KEYS, dict)
    for pattern, reason in P.DROPPED_KEYS.items():
        assert isinstance(pattern, str) and reason
    assert not any(P.is_dropped(k) for k in P.official_param_shapes(PRESETS["sam2.1_hiera_large"]))


def test_flatten_unflatten():
    flat = {"a.b.weight": 1, "a.b.bias": 2, "a.0.x": 3, "c": 4}
    tree = P.unflatten(flat)
    assert tree == {"a": {"b": {"weight": 1, "bias": 2}, "0": {"x": 3}}, "c": 4}
    assert P.flatten(tree) == flat
    with pytest.raises(ValueError, match="a.b"):
        P.unflatten({"a.b": 1, "a.b.c": 2})
    with pytest.raises(ValueError, match="a.b"):
        P.unflatten({"a.b.c": 1, "a.b": 2})


def test_jax_param_shapes_and_init_params():
    cfg = get_config("sam2_hiera_tiny")
    shapes = P.flatten(P.jax_param_shapes(cfg))
    official_shapes = P.official_param_shapes(cfg)
    assert set(shapes) == set(official_shapes)
    for key, shape in official_shapes.items():
        assert shapes[key] == P.to_jax_layout(key, np.empty(shape, np.float32)).shape
    assert shapes["sam_mask_decoder.output_upscaling.0.weight"] == (2, 2, 256, 64)
    assert shapes["image_encoder.trunk.blocks.1.attn.qkv.weight"] == (96, 576)

    params = P.init_params(cfg, jax.random.PRNGKey(0))
    flat = P.flatten(params)
    assert {k: tuple(v.shape) for k, v in flat.items()} == shapes
    assert all(v.dtype == np.float32 for v in flat.values())
    assert all(bool(np.isfinite(np.asarray(v)).all()) for v in flat.values())
    assert np.all(np.asarray(flat["memory_attention.norm.weight"]) == 1)
    assert np.all(np.asarray(flat["memory_attention.norm.bias"]) == 0)
    w = np.asarray(flat["memory_attention.layers.0.linear1.weight"])
    assert 0.5 / 16 < w.std() < 2 / 16  # ~ 1/sqrt(fan_in=256)
    again = P.flatten(P.init_params(cfg, jax.random.PRNGKey(0)))
    k = "obj_ptr_proj.layers.0.weight"
    assert np.array_equal(np.asarray(again[k]), np.asarray(flat[k]))
    other = P.flatten(P.init_params(cfg, jax.random.PRNGKey(1)))
    assert not np.array_equal(np.asarray(other[k]), np.asarray(flat[k]))


def test_to_official_inverts_from_official():
    sd = official.official_state_dict("sam2.1_hiera_tiny", image_size=256)
    back = P.to_official(P.from_official(sd))
    assert set(back) == set(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_optional_tensors_follow_the_config():
    # switch off the optional heads in the official model and in our config alike
    overrides = ("++model.pred_obj_scores_mlp=false", "++model.use_mlp_for_obj_ptr_proj=false",
                 "++model.use_high_res_features_in_sam=false")
    model = official.build_official("sam2_hiera_tiny", image_size=256, overrides=overrides)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    base = get_config("sam2_hiera_tiny", image_size=256)
    cfg = base.replace(
        decoder=dataclasses.replace(base.decoder, pred_obj_scores_mlp=False,
                                    use_high_res_features=False),
        memory=dataclasses.replace(base.memory, use_mlp_for_obj_ptr_proj=False),
    )
    assert P.official_param_shapes(cfg) == got
    assert "sam_mask_decoder.pred_obj_score_head.weight" in got
    assert "sam_mask_decoder.conv_s0.weight" not in got
    assert all(len(P.matching_rules(k)) == 1 for k in got)
