"""Position encodings vs the official modules: the normalised sine grid (FPN neck, memory
encoder) and the random-Fourier encoding of the prompt encoder (dense grid and points)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sam2.modeling.position_encoding import PositionEmbeddingRandom, PositionEmbeddingSine

from samv2_jax.modeling.position_encoding import (
    random_fourier_encode,
    random_fourier_grid,
    sine_grid,
)

import official

TOL = 1e-4


@pytest.mark.parametrize("num_pos_feats", [256, 64])
@pytest.mark.parametrize("hw", [(64, 64), (16, 16), (32, 24), (7, 5), (1, 3), (256, 256)])
def test_sine_grid_matches_official(hw, num_pos_feats):
    pe = PositionEmbeddingSine(num_pos_feats)
    x = torch.zeros(2, 3, *hw)
    theirs = pe(x).numpy()  # [B, C, H, W]
    assert theirs.shape == (2, num_pos_feats, *hw)
    ours = sine_grid(*hw, num_pos_feats)
    assert ours.dtype == np.float32 and ours.shape == (*hw, num_pos_feats)
    for b in range(2):
        err = official.rel_err(ours, theirs[b].transpose(1, 2, 0))
        assert err <= TOL, (hw, num_pos_feats, err)


@pytest.mark.parametrize("temperature", [10000, 20])
def test_sine_grid_temperature(temperature):
    pe = PositionEmbeddingSine(128, temperature=temperature)
    theirs = pe(torch.zeros(1, 1, 12, 20))[0].numpy().transpose(1, 2, 0)
    ours = sine_grid(12, 20, 128, float(temperature))
    assert official.rel_err(ours, theirs) <= TOL
    # The two temperatures give different grids, so the argument is not ignored.
    other = sine_grid(12, 20, 128, 10000.0 if temperature != 10000 else 20.0)
    assert official.rel_err(other, theirs) > 1e-2


def test_sine_grid_is_y_then_x():
    """First half of the features varies along rows only, second half along columns only."""
    g = sine_grid(6, 9, 64)
    assert np.allclose(g[:, :1, :32], g[:, :, :32])
    assert np.allclose(g[:1, :, 32:], g[:, :, 32:])
    assert not np.allclose(g[:1, :, :32], g[:, :, :32])


def _random_pe(num_pos_feats, seed, scale=None):
    torch.manual_seed(seed)
    pe = PositionEmbeddingRandom(num_pos_feats, scale=scale)
    return pe, pe.positional_encoding_gaussian_matrix.numpy()


@pytest.mark.parametrize("num_pos_feats,scale", [(128, None), (32, 2.5)])
@pytest.mark.parametrize("hw", [(16, 16), (64, 64), (12, 20), (1, 1)])
def test_random_fourier_grid_matches_official(hw, num_pos_feats, scale):
    pe, gauss = _random_pe(num_pos_feats, seed=sum(hw), scale=scale)
    with torch.no_grad():
        theirs = pe(hw).numpy()  # [C, H, W]
    ours = np.asarray(random_fourier_grid(jnp.asarray(gauss), *hw))
    assert ours.shape == (*hw, 2 * num_pos_feats)
    err = official.rel_err(ours, theirs.transpose(1, 2, 0))
    assert err <= TOL, err


@pytest.mark.parametrize("image_hw", [(256, 256), (300, 451), (1024, 1024)])
def test_random_fourier_coords_match_official(image_hw):
    pe, gauss = _random_pe(128, seed=7)
    rng = np.random.default_rng(image_hw[1])
    h, w = image_hw
    coords = rng.uniform(-0.05, 1.05, (3, 5, 2)).astype(np.float32) * np.float32([w, h])
    coords[0, 0] = 0.0
    coords[0, 1] = [w, h]
    with torch.no_grad():
        theirs = pe.forward_with_coords(torch.from_numpy(coords), image_hw).numpy()
    # forward_with_coords divides x by the width and y by the height.
    ours = np.asarray(random_fourier_encode(jnp.asarray(gauss),
                                            jnp.asarray(coords / np.float32([w, h]))))
    assert ours.shape == theirs.shape == (3, 5, 256)
    err = official.rel_err(ours, theirs)
    assert err <= TOL, err
    # sin then cos: the two halves square-sum to one.
    np.testing.assert_allclose(ours[..., :128] ** 2 + ours[..., 128:] ** 2, 1.0, atol=1e-5)
