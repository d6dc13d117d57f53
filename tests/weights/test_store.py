"""Converted directories: exact round trip, .pt loading, image_size override, clear errors."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from samv2_jax.config import get_config
from samv2_jax.weights.layout import flatten, init_params
from samv2_jax.weights.official import convert_state_dict
from samv2_jax.weights.store import Model, load, save_model

import official

NAME = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def sd():
    return official.official_state_dict(NAME, image_size=256)


@pytest.fixture(scope="module")
def saved(sd, tmp_path_factory):
    cfg, params = convert_state_dict(sd, image_size=256)
    out = save_model(Model(cfg, params), tmp_path_factory.mktemp("m") / "tiny")
    return out, cfg, params


def _assert_same_params(a, b):
    fa, fb = flatten(a), flatten(b)
    assert set(fa) == set(fb)
    for k in fa:
        x, y = np.asarray(fa[k]), np.asarray(fb[k])
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


def test_round_trip_is_exact(saved):
    out, cfg, params = saved
    t = time.perf_counter()
    model = load(out)
    seconds = time.perf_counter() - t
    assert model.config == cfg
    _assert_same_params(model.params, params)
    assert all(isinstance(v, jax.Array) for v in flatten(model.params).values())
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "samv2-jax" and meta["format_version"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.safetensors"]
    assert meta["num_params"] == model.num_params == 38_962_754
    assert seconds < 60, f"loading tiny took {seconds:.1f}s"


def test_load_official_pt(sd, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}}, path)
    model = load(path, image_size=512)
    assert model.config == get_config(NAME, image_size=512)
    key = "sam_mask_decoder.output_upscaling.3.weight"
    assert np.array_equal(np.asarray(flatten(model.params)[key]), sd[key].transpose(2, 3, 0, 1))
    assert isinstance(flatten(model.params)[key], jax.Array)


def test_image_size_override(saved):
    out, cfg, params = saved
    model = load(str(out), image_size=1024)
    assert model.config.image_size == 1024 and model.config == cfg.replace(image_size=1024)
    with pytest.raises(ValueError, match="multiple of 32"):
        load(out, image_size=100)


def test_save_load_init_params(tmp_path):
    cfg = get_config("sam2_hiera_tiny", image_size=512)
    params = init_params(cfg, jax.random.PRNGKey(3))
    out = save_model(Model(cfg, params), tmp_path / "scratch")
    model = load(out)
    assert model.config == cfg
    _assert_same_params(model.params, params)


def test_format_version_1_directories_still_load(saved, tmp_path):
    """Models converted before the single-file format (orbax params/) load unchanged."""
    import orbax.checkpoint as ocp

    out, cfg, params = saved
    old = tmp_path / "v1"
    old.mkdir()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(old / "params", params)
        ckptr.wait_until_finished()
    meta = json.loads((out / "config.json").read_text())
    (old / "config.json").write_text(json.dumps(dict(meta, format_version=1)))
    model = load(old)
    assert model.config == cfg
    _assert_same_params(model.params, params)


def test_bfloat16_params_round_trip(tmp_path):
    cfg = get_config("sam2_hiera_tiny", image_size=256)
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), init_params(cfg, jax.random.PRNGKey(1)))
    model = load(save_model(Model(cfg, params), tmp_path / "bf16"))
    _assert_same_params(model.params, params)


def test_damaged_params_file_says_convert_again(saved, tmp_path):
    out = _copy(saved, tmp_path)
    data = (out / "params.safetensors").read_bytes()
    (out / "params.safetensors").write_bytes(data[:100])
    with pytest.raises(ValueError, match="not a readable params file.*convert the model again"):
        load(out)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nothing")


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a converted samv2-jax model.*samv2 convert"):
        load(tmp_path)


def _copy(saved, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(saved[0], out)
    return out


def test_config_that_does_not_match_tensors(saved, tmp_path):
    out = _copy(saved, tmp_path)
    meta = json.loads((out / "config.json").read_text())
    meta["config"] = get_config("sam2.1_hiera_small").to_dict()
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="config.json.*sam2.1_hiera_small.*does not match the "
                                         "stored tensors.*missing.*image_encoder.trunk.blocks.12"):
        load(out)


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not a samv2-jax model config"),
    ('{"format": "samv2-jax", "format_version": 99, "config": {}}', "format_version 99"),
    ('{"format": "samv2-jax", "format_version": 1, "config": {"trunk": {"depth_x": 1}}}',
     "invalid model config.*depth_x"),
])
def test_bad_config_json(saved, tmp_path, text, match):
    out = _copy(saved, tmp_path)
    (out / "config.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        load(out)


def test_save_refuses_mismatched_params_and_overwrite(saved, tmp_path):
    out, cfg, params = saved
    with pytest.raises(ValueError, match="do not fit config sam2.1_hiera_small"):
        save_model(Model(get_config("sam2.1_hiera_small"), params), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileExistsError, match="already holds a model"):
        save_model(Model(cfg, params), out)


def test_pt_without_torch_says_how_to_fix(sd, tmp_path, monkeypatch):
    # a zip checkpoint (what torch.save writes today) reads without torch; the old pickle
    # format cannot, and the error says what to do
    legacy = tmp_path / "legacy.pt"
    zipped = tmp_path / "zipped.pt"
    content = {"model": {"no_mem_embed": torch.zeros(1, 1, 256)}}
    torch.save(content, legacy, _use_new_zipfile_serialization=False)
    torch.save(content, zipped)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="pip install torch.*samv2 convert"):
        load(legacy)
    with pytest.raises(ValueError, match="holds no SAM 2 tensors.*no_mem_embed"):
        load(zipped)


def test_torch_is_not_imported_by_the_package():
    code = ("import sys, samv2_jax.weights.store, samv2_jax.weights.layout, samv2_jax.app.cli, "
            "samv2_jax.weights.official, convert; print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.strip() == "False"
