"""Hiera trunk parity with the official `image_encoder.trunk`, and its building blocks.

Every stage output is compared, at two input sizes for tiny (the windowed stages pad
differently: at 256 the stage-3 grid 16 pads to 28 for window 14, at 512 the grid 32 pads to
42) and for sam2_hiera_large (window_spec 8/4/16/8, two heads at the first stage).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sam2.modeling.backbones import utils as official_utils

from samv2_jax.modeling.hiera import (
    hiera,
    max_pool,
    position_embedding,
    window_partition,
    window_unpartition,
)
from samv2_jax.modeling.transforms import preprocess_image

import official
from conftest import converted_pair, sample_image

TOL = 1e-4

CASES = [("sam2.1_hiera_tiny", 256), ("sam2.1_hiera_tiny", 512), ("sam2_hiera_large", 256)]


@functools.partial(jax.jit, static_argnums=1)
def _hiera(p, cfg, x):
    return hiera(p, cfg, x)


def _image(size):
    """A real picture, normalised as the predictor does, NHWC float32."""
    return np.asarray(preprocess_image(sample_image(300, 451), size))[None]


@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}@{s}" for n, s in CASES])
def test_trunk_stage_outputs_match_official(name, size):
    torch_model, model = converted_pair(name, size)
    cfg = model.config.trunk
    x = _image(size)
    with torch.no_grad():
        theirs = torch_model.image_encoder.trunk(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    ours = _hiera(model.params["image_encoder"]["trunk"], cfg, jnp.asarray(x))
    assert len(ours) == len(theirs) == 4
    for level, (o, t) in enumerate(zip(ours, theirs)):
        t = t.numpy().transpose(0, 2, 3, 1)
        stride = 4 * 2 ** level
        assert o.shape == t.shape == (1, size // stride, size // stride, t.shape[-1]), level
        err = official.rel_err(o, t)
        assert err <= TOL, (name, size, level, err)


def test_windowed_stages_really_pad():
    """The cases above must cover padded windows, otherwise they prove less than they claim."""
    specs = converted_pair("sam2.1_hiera_tiny", 256)[1].config.trunk.block_specs()
    grids = {256: [], 512: []}
    for size in grids:
        hw = size // 4
        for spec in specs:
            if spec.window_size and hw % spec.window_size:
                grids[size].append((hw, spec.window_size))
            if spec.q_stride:
                hw //= spec.q_stride[0]
    assert (16, 14) in grids[256] and (32, 14) in grids[512], grids


def test_trunk_batch_of_two():
    """Two different images in one batch give each image's own single-image result."""
    torch_model, model = converted_pair("sam2.1_hiera_tiny", 256)
    cfg = model.config.trunk
    second = np.asarray(preprocess_image(sample_image(256, 256), 256))[None]
    x = np.concatenate([_image(256), second])
    p = model.params["image_encoder"]["trunk"]
    both = _hiera(p, cfg, jnp.asarray(x))
    with torch.no_grad():
        theirs = torch_model.image_encoder.trunk(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    for o, t in zip(both, theirs):
        assert official.rel_err(o, t.numpy().transpose(0, 2, 3, 1)) <= TOL
    assert not np.allclose(np.asarray(both[-1][0]), np.asarray(both[-1][1]))


@pytest.mark.parametrize("hw,ws", [((16, 16), 14), ((8, 8), 7), ((13, 10), 4), ((8, 16), 8),
                                   ((5, 7), 3)])
def test_window_partition_matches_official_and_round_trips(hw, ws):
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    x = rng.standard_normal((2, *hw, 6)).astype(np.float32)
    windows = np.asarray(window_partition(jnp.asarray(x), ws))
    t_windows, pad_hw = official_utils.window_partition(torch.from_numpy(x), ws)
    np.testing.assert_array_equal(windows, t_windows.numpy())
    nwin = (-(-hw[0] // ws)) * (-(-hw[1] // ws))
    assert windows.shape == (2 * nwin, ws, ws, 6)
    padded = pad_hw != tuple(hw)
    if padded:  # padding is zeros, kept inside the windows
        assert (windows == 0).sum() == 2 * 6 * (pad_hw[0] * pad_hw[1] - hw[0] * hw[1])
    back = np.asarray(window_unpartition(jnp.asarray(windows), ws, hw))
    np.testing.assert_array_equal(back, x)
    t_back = official_utils.window_unpartition(t_windows, ws, pad_hw, tuple(hw))
    np.testing.assert_array_equal(back, t_back.numpy())


@pytest.mark.parametrize("shape,stride", [((2, 8, 8, 3), (2, 2)), ((1, 7, 9, 5), (2, 2)),
                                          ((1, 15, 11, 4), (3, 3)), ((3, 1, 2, 2), (1, 2)),
                                          ((1, 5, 5, 1), (2, 2))])
def test_max_pool_matches_torch(shape, stride):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    ours = np.asarray(max_pool(jnp.asarray(x), stride))
    pool = torch.nn.MaxPool2d(kernel_size=stride, stride=stride, ceil_mode=False)
    theirs = pool(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2_hiera_large"])
@pytest.mark.parametrize("hw", [(64, 64), (16, 16), (128, 96), (24, 56)])
def test_position_embedding_matches_official(name, hw):
    torch_model, model = converted_pair(name, 256)
    trunk = torch_model.image_encoder.trunk
    with torch.no_grad():
        theirs = trunk._get_pos_embed(hw).numpy()
    ours = position_embedding(model.params["image_encoder"]["trunk"], model.config.trunk, hw,
                              jnp.float32)
    assert ours.dtype == jnp.float32
    assert ours.shape == theirs.shape == (1, *hw, model.config.trunk.embed_dim)
    err = official.rel_err(ours, theirs)
    assert err <= TOL, err


def test_position_embedding_rejects_grid_off_the_window():
    _, model = converted_pair("sam2.1_hiera_tiny", 256)
    with pytest.raises(ValueError, match="multiple of the window size"):
        position_embedding(model.params["image_encoder"]["trunk"], model.config.trunk, (20, 20),
                           jnp.float32)
