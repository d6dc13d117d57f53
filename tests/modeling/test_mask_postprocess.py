"""Connected components and mask clean-up checked against scipy.ndimage references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from samv2_jax.modeling.mask_postprocess import (
    connected_components,
    fill_holes,
    fill_holes_and_remove_sprinkles,
)

EIGHT = np.ones((3, 3), dtype=int)
_cc = jax.jit(connected_components)


# ----------------------------------------------------------------------------- references

def ref_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy labels and per-pixel component areas, image by image over leading dims."""
    mask = np.asarray(mask, bool)
    flat = mask.reshape((-1,) + mask.shape[-2:])
    labels = np.zeros(flat.shape, np.int64)
    areas = np.zeros(flat.shape, np.int64)
    for i, m in enumerate(flat):
        lab, _ = ndimage.label(m, structure=EIGHT)
        sizes = np.bincount(lab.ravel())
        labels[i] = lab
        areas[i] = np.where(lab > 0, sizes[lab], 0)
    return labels.reshape(mask.shape), areas.reshape(mask.shape)


def ref_postprocess(logits, threshold, max_hole_area, max_sprinkle_area):
    logits = np.asarray(logits, np.float32)
    out = logits.copy()
    if max_hole_area > 0:
        lab, area = ref_components(logits <= threshold)
        out[(lab > 0) & (area <= max_hole_area)] = threshold + 10.0
    if max_sprinkle_area > 0:
        lab, area = ref_components(logits > threshold)  # original logits, not `out`
        out[(lab > 0) & (area <= max_sprinkle_area)] = threshold - 10.0
    return out


def ref_fill_holes(logits, max_area):
    logits = np.asarray(logits)
    lab, area = ref_components(logits <= 0)
    return np.where((lab > 0) & (area <= max_area), np.float32(0.1), logits).astype(logits.dtype)


def assert_same_components(mask):
    mask = np.asarray(mask, bool)
    labels, areas = (np.asarray(x) for x in _cc(jnp.asarray(mask)))
    assert labels.dtype == np.int32 and areas.dtype == np.int32
    assert labels.shape == areas.shape == mask.shape
    ref_labels, ref_areas = ref_components(mask)
    np.testing.assert_array_equal(areas, ref_areas)
    assert (labels[~mask] == 0).all()
    assert (labels[mask] > 0).all()
    flat_mask = mask.reshape((-1,) + mask.shape[-2:])
    ours = labels.reshape(flat_mask.shape)
    theirs = ref_labels.reshape(flat_mask.shape)
    for m, a, b in zip(flat_mask, ours, theirs):
        # Same partition: the label pairing must be a bijection.
        pairs = set(zip(a[m].tolist(), b[m].tolist()))
        assert len(pairs) == len(set(a[m].tolist())) == len(set(b[m].tolist()))


# ----------------------------------------------------------------------------- inputs

def smooth_noise(rng, shape, sigma):
    sig = (0,) * (len(shape) - 2) + (sigma, sigma)
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sig).astype(np.float32)


def spiral(n: int) -> np.ndarray:
    """One-pixel-wide square spiral filling an n x n image (a single long path)."""
    m = np.zeros((n, n), bool)
    r = c = d = 0
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    m[0, 0] = True

    def can_step(dr, dc):
        r1, c1, r2, c2 = r + dr, c + dc, r + 2 * dr, c + 2 * dc
        if not (0 <= r1 < n and 0 <= c1 < n) or m[r1, c1]:
            return False
        return not (0 <= r2 < n and 0 <= c2 < n) or not m[r2, c2]

    turns = 0
    while turns < 2:
        dr, dc = steps[d]
        if can_step(dr, dc):
            r, c, turns = r + dr, c + dc, 0
            m[r, c] = True
        else:
            d, turns = (d + 1) % 4, turns + 1
    return m


def snake(h: int, w: int) -> np.ndarray:
    """Boustrophedon: full rows joined alternately at the right and left ends."""
    m = np.zeros((h, w), bool)
    m[::2] = True
    for r in range(1, h, 2):
        m[r, w - 1 if (r // 2) % 2 == 0 else 0] = True
    return m


# ----------------------------------------------------------------------------- connected_components

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_blobs_match_scipy(seed):
    rng = np.random.default_rng(seed)
    sigma = [1.0, 2.0, 3.0, 5.0][seed]
    assert_same_components(smooth_noise(rng, (3, 96, 80), sigma) > 0.0)


def test_random_noise_many_small_components():
    rng = np.random.default_rng(7)
    assert_same_components(rng.random((3, 96, 80)) < 0.45)


def test_spiral_and_snake_worst_cases():
    s = spiral(96)
    assert ndimage.label(s, structure=EIGHT)[1] == 1 and s.sum() > 96 * 96 // 2 - 96
    sn = snake(96, 80)
    masks = np.stack([s[:, :80], s.T[:, :80], sn, snake(80, 96).T])
    # Cropped spirals split into many long paths; full ones stay a single path.
    assert_same_components(masks)
    assert_same_components(np.stack([s, s.T, s[::-1, ::-1]]))
    labels, areas = _cc(jnp.asarray(s))
    assert int(areas.max()) == int(areas[0, 0]) == s.sum()
    assert len(np.unique(np.asarray(labels)[s])) == 1


def test_all_zero_all_one():
    zeros = np.zeros((2, 17, 23), bool)
    labels, areas = _cc(jnp.asarray(zeros))
    assert not np.asarray(labels).any() and not np.asarray(areas).any()
    ones = np.ones((2, 17, 23), bool)
    labels, areas = _cc(jnp.asarray(ones))
    assert (np.asarray(areas) == 17 * 23).all()
    assert len(np.unique(np.asarray(labels)[0])) == 1
    assert_same_components(np.stack([zeros[0], ones[0]]))


def test_single_pixels_and_edges():
    m = np.zeros((17, 23), bool)
    for r, c in [(0, 0), (0, 22), (16, 0), (16, 22), (8, 11), (0, 11), (8, 0)]:
        m[r, c] = True
    labels, areas = (np.asarray(x) for x in _cc(jnp.asarray(m)))
    assert (areas[m] == 1).all()
    assert len(np.unique(labels[m])) == m.sum()
    assert_same_components(m)
    # Degenerate single-row / single-column images.
    assert_same_components(np.array([[1, 1, 0, 1, 0, 0, 1, 1, 1]], bool))
    assert_same_components(np.array([[1], [0], [1], [1], [0], [1]], bool))


def test_diagonal_only_connections():
    m = np.eye(19, dtype=bool) | np.eye(19, dtype=bool)[::-1]
    labels, areas = (np.asarray(x) for x in _cc(jnp.asarray(m)))
    assert len(np.unique(labels[m])) == 1
    assert (areas[m] == m.sum()).all()
    # Checkerboard: every foreground pixel touches the others only diagonally.
    checker = (np.add.outer(np.arange(12), np.arange(15)) % 2).astype(bool)
    labels, areas = (np.asarray(x) for x in _cc(jnp.asarray(checker)))
    assert (areas[checker] == checker.sum()).all()
    assert_same_components(np.stack([m[:12, :15], checker]))


def test_batch_dims_are_independent():
    rng = np.random.default_rng(11)
    masks = smooth_noise(rng, (2, 3, 40, 36), 2.0) > 0.1
    assert_same_components(masks)
    labels, areas = (np.asarray(x) for x in _cc(jnp.asarray(masks)))
    for i in range(2):
        for j in range(3):
            lone_l, lone_a = (np.asarray(x) for x in _cc(jnp.asarray(masks[i, j])))
            np.testing.assert_array_equal(areas[i, j], lone_a)
            np.testing.assert_array_equal(labels[i, j], lone_l)


# ----------------------------------------------------------------------------- post-processing

@pytest.mark.parametrize(
    "threshold,hole,sprinkle",
    [(0.0, 30.0, 0.0), (0.0, 0.0, 25.0), (0.0, 40.0, 40.0), (0.3, 12.5, 60.0), (-0.2, 2000.0, 1.0)],
)
def test_fill_holes_and_remove_sprinkles_matches_reference(threshold, hole, sprinkle):
    rng = np.random.default_rng(int(hole + sprinkle))
    logits = 3 * smooth_noise(rng, (2, 3, 48, 40), 1.5)
    got = fill_holes_and_remove_sprinkles(jnp.asarray(logits), threshold, hole, sprinkle)
    want = ref_postprocess(logits, threshold, hole, sprinkle)
    assert got.dtype == jnp.float32 and got.shape == logits.shape
    np.testing.assert_array_equal(np.asarray(got), want)
    assert not np.array_equal(want, logits)  # the case actually exercised something


def test_sprinkles_use_original_logits():
    # A 3x3 ring (8 px) around a 1 px hole: filling the hole would make the blob 9 px.
    logits = np.full((9, 9), -1.0, np.float32)
    logits[3:6, 3:6] = 1.0
    logits[4, 4] = -1.0
    got = np.asarray(fill_holes_and_remove_sprinkles(jnp.asarray(logits), 0.0, 1.0, 8.0))
    np.testing.assert_array_equal(got, ref_postprocess(logits, 0.0, 1.0, 8.0))
    assert got[4, 4] == 10.0  # hole filled
    assert (got[3:6, 3] == -10.0).all()  # ring removed as an 8 px sprinkle
    assert got[0, 0] == -1.0  # the large outer background stays
    # With the limit below the ring's area the ring stays and the hole is still filled.
    got = np.asarray(fill_holes_and_remove_sprinkles(jnp.asarray(logits), 0.0, 1.0, 7.0))
    assert (got[3:6, 3:6] == np.where(logits[3:6, 3:6] > 0, 1.0, 10.0)).all()


def test_border_background_counts_as_hole():
    logits = np.full((2, 6, 7), -2.0, np.float32)
    logits[1, 2:4, 2:4] = 3.0
    got = np.asarray(fill_holes_and_remove_sprinkles(jnp.asarray(logits), 0.0, 42.0, 0.0))
    assert (got[0] == 10.0).all()  # the whole-image background is only 42 px
    assert (got[1][logits[1] < 0] == 10.0).all()  # border-touching 38 px background too
    assert (got[1][logits[1] > 0] == 3.0).all()
    got = np.asarray(fill_holes_and_remove_sprinkles(jnp.asarray(logits), 0.0, 41.0, 0.0))
    assert (got[0] == -2.0).all() and (got[1][logits[1] < 0] == 10.0).all()
    np.testing.assert_array_equal(got, ref_postprocess(logits, 0.0, 41.0, 0.0))


def test_postprocess_skips_and_under_jit():
    rng = np.random.default_rng(5)
    logits = 3 * smooth_noise(rng, (3, 40, 40), 1.5)
    same = fill_holes_and_remove_sprinkles(jnp.asarray(logits))
    np.testing.assert_array_equal(np.asarray(same), logits)

    @jax.jit
    def run(x):
        return fill_holes_and_remove_sprinkles(x, mask_threshold=0.1, max_hole_area=20.0,
                                               max_sprinkle_area=20.0) * 2.0

    np.testing.assert_array_equal(np.asarray(run(jnp.asarray(logits))),
                                  2.0 * ref_postprocess(logits, 0.1, 20.0, 20.0))


# ----------------------------------------------------------------------------- fill_holes

@pytest.mark.parametrize("max_area", [1.0, 8.0, 50.0])
def test_fill_holes_matches_reference(max_area):
    rng = np.random.default_rng(int(max_area))
    logits = 3 * smooth_noise(rng, (2, 1, 48, 40), 1.5)
    want = ref_fill_holes(logits, max_area)
    got = jax.jit(lambda x: fill_holes(x, max_area))(jnp.asarray(logits))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)
    assert not np.array_equal(want, logits)


def test_fill_holes_small_case_and_validation():
    logits = np.full((7, 7), 2.0, np.float32)
    logits[1, 1] = -3.0  # 1 px hole
    logits[4:6, 4:6] = 0.0  # 4 px hole; 0 counts as background
    got = np.asarray(fill_holes(jnp.asarray(logits), 1))
    assert got[1, 1] == np.float32(0.1) and (got[4:6, 4:6] == 0.0).all()
    got = np.asarray(fill_holes(jnp.asarray(logits), 4.0))
    assert (got[4:6, 4:6] == np.float32(0.1)).all()
    with pytest.raises(ValueError):
        fill_holes(jnp.asarray(logits), 0.0)
