"""Official .pt -> params: values land where our layers expect them; bad input is named."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from samv2_jax.config import get_config
from samv2_jax.weights.layout import flatten
from samv2_jax.weights.official import convert_checkpoint, convert_state_dict, read_state_dict

import official

NAME = "sam2.1_hiera_tiny"
SIZE = 256


@pytest.fixture(scope="module")
def model():
    return official.build_official(NAME, image_size=SIZE)


@pytest.fixture(scope="module")
def sd(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def pt_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / f"{NAME}.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def converted(pt_file):
    return convert_state_dict(read_state_dict(pt_file), image_size=SIZE)


def _get(params, key):
    return flatten(params)[key]


def test_pt_converts_with_inferred_config(converted, sd):
    cfg, params = converted
    assert cfg == get_config(NAME, image_size=SIZE)
    flat = flatten(params)
    assert set(flat) == set(sd)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in flat.values())
    assert all(v.flags.c_contiguous for v in flat.values())


def test_bare_state_dict_and_legacy_format_are_read(model, sd, tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    for path in (bare, legacy):
        got = read_state_dict(path)
        assert set(got) == set(sd)
        key = "sam_mask_decoder.iou_token.weight"
        assert np.array_equal(got[key], sd[key])


def test_linear_layout_matches_torch(model, converted):
    _, params = converted
    torch_mod = model.image_encoder.trunk.blocks[1].attn.qkv
    x = np.random.default_rng(0).standard_normal((3, torch_mod.in_features)).astype(np.float32)
    want = torch_mod(torch.from_numpy(x)).detach().numpy()
    p = params["image_encoder"]["trunk"]["blocks"]["1"]["attn"]["qkv"]
    np.testing.assert_allclose(x @ p["weight"] + p["bias"], want, rtol=1e-5, atol=1e-5)


def _conv_nhwc(x, w, b, stride, pad, groups=1):
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(w), (stride, stride), [(pad, pad), (pad, pad)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=jax.lax.Precision.HIGHEST)
    return np.asarray(y + b)


@pytest.mark.parametrize("path,stride,pad,groups,channels", [
    ("image_encoder.trunk.patch_embed.proj", 4, 3, 1, 3),
    ("memory_encoder.fuser.layers.0.dwconv", 1, 3, 256, 256),
])
def test_conv_layout_matches_torch(model, converted, path, stride, pad, groups, channels):
    _, params = converted
    torch_mod = model.get_submodule(path)
    x = np.random.default_rng(1).standard_normal((1, channels, 16, 16)).astype(np.float32)
    want = torch_mod(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    w, b = _get(params, path + ".weight"), _get(params, path + ".bias")
    got = _conv_nhwc(x.transpose(0, 2, 3, 1), w, b, stride, pad, groups)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_transpose_layout_matches_torch(model, converted):
    _, params = converted
    torch_mod = model.sam_mask_decoder.output_upscaling[0]
    x = np.random.default_rng(2).standard_normal((1, 256, 4, 5)).astype(np.float32)
    want = torch_mod(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    p = params["sam_mask_decoder"]["output_upscaling"]["0"]
    k = p["weight"]  # [kh, kw, in, out]: input pixel (h, w) paints output (2h + i, 2w + j)
    y = np.einsum("bhwc,ijco->bhiwjo", x.transpose(0, 2, 3, 1), k)
    got = y.reshape(1, 8, 10, k.shape[-1]) + p["bias"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_pos_embed_and_tokens_land_in_place(converted, sd):
    _, params = converted
    trunk = params["image_encoder"]["trunk"]
    src = sd["image_encoder.trunk.pos_embed"]  # [1, C, H, W]
    assert trunk["pos_embed"].shape == (1, src.shape[2], src.shape[3], src.shape[1])
    assert np.array_equal(trunk["pos_embed"], src.transpose(0, 2, 3, 1))
    win = sd["image_encoder.trunk.pos_embed_window"]
    assert np.array_equal(trunk["pos_embed_window"][0, 3, 5], win[0, :, 3, 5])
    dec = params["sam_mask_decoder"]
    assert np.array_equal(dec["mask_tokens"]["weight"], sd["sam_mask_decoder.mask_tokens.weight"])
    assert np.array_equal(params["maskmem_tpos_enc"], sd["maskmem_tpos_enc"])
    assert np.array_equal(params["sam_prompt_encoder"]["point_embeddings"]["2"]["weight"],
                          sd["sam_prompt_encoder.point_embeddings.2.weight"])


# --- unreadable files ---------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [os.urandom(4096), b"model: sam2.1_hiera_tiny\nweights: none\n",
                                     b""], ids=["random", "text", "empty"])
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint|empty"):
        read_state_dict(path)


def test_truncated_file(pt_file, tmp_path):
    data = pt_file.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_state_dict(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused(sd, tmp_path):
    marker = str(tmp_path / "code_ran")
    path = tmp_path / "evil.pt"
    torch.save({"model": {"no_mem_embed": torch.zeros(1, 1, 256)}, "x": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="refusing.*run code"):
        read_state_dict(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("obj,match", [
    ({"model": {"encoder.weight": torch.zeros(2)}}, "no SAM 2 tensors.*encoder.weight"),
    ({"weight": torch.zeros(2)}, "no SAM 2 tensors"),
    ([torch.zeros(2)], "not a state dict"),
    ({"model": {"image_encoder.x": 3}}, "'image_encoder.x' is a int, not a tensor"),
])
def test_not_a_sam2_state_dict(tmp_path, obj, match):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=match):
        read_state_dict(path)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        read_state_dict(tmp_path)


# --- tensors that do not fit ------------------------------------------------------------------


def test_extra_key(sd):
    bad = dict(sd, **{"sam_mask_decoder.extra_head.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match=r"unexpected key.*'sam_mask_decoder\.extra_head\.weight'"):
        convert_state_dict(bad)


def test_missing_key(sd):
    bad = {k: v for k, v in sd.items() if k != "sam_mask_decoder.conv_s0.bias"}
    with pytest.raises(ValueError, match=r"missing key.*'sam_mask_decoder\.conv_s0\.bias'"):
        convert_state_dict(bad)


def test_wrong_shape(sd):
    bad = dict(sd)
    bad["obj_ptr_tpos_proj.weight"] = np.zeros((64, 128), np.float32)
    with pytest.raises(ValueError) as info:
        convert_state_dict(bad)
    msg = str(info.value)
    assert "'obj_ptr_tpos_proj.weight' expected (64, 256) found (64, 128)" in msg


def test_given_config_that_does_not_match(sd):
    with pytest.raises(ValueError) as info:
        convert_state_dict(sd, config=get_config("sam2.1_hiera_small"))
    msg = str(info.value)
    assert "sam2.1_hiera_small" in msg and "missing" in msg
    assert "image_encoder.trunk.blocks.12" in msg  # small has 16 blocks, tiny 12
    assert "do match sam2.1_hiera_tiny" in msg

    with pytest.raises(ValueError) as info:
        convert_state_dict(sd, config=get_config("sam2_hiera_tiny"))
    msg = str(info.value)
    assert "'no_obj_embed_spatial'" in msg and "do match sam2.1_hiera_tiny" in msg


def test_given_config_that_matches_and_image_size(sd):
    cfg, params = convert_state_dict(sd, config=get_config(NAME), image_size=512)
    assert cfg.name == NAME and cfg.image_size == 512
    cfg, _ = convert_state_dict(sd)
    assert cfg.image_size == 1024


def test_unrecognised_trunk(sd):
    bad = {k: v for k, v in sd.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    with pytest.raises(ValueError, match="matches none of the official"):
        convert_state_dict(bad)


def test_convert_checkpoint_writes_a_directory(pt_file, sd, tmp_path):
    from samv2_jax.weights.store import load

    out = convert_checkpoint(pt_file, tmp_path / "out", image_size=512)
    assert (out / "config.json").is_file() and (out / "params.safetensors").is_file()
    model = load(out)
    assert model.config == get_config(NAME, image_size=512)
    key = "memory_encoder.fuser.layers.1.dwconv.weight"
    assert np.array_equal(np.asarray(_get(model.params, key)), sd[key].transpose(2, 3, 1, 0))
    with pytest.raises(FileExistsError, match="already holds a model"):
        convert_checkpoint(pt_file, out)
