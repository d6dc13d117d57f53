"""Each piece of the published memory policies on its own, against direct implementations
and hand-made cases: SAMURAI's Kalman filter and box scores, the gated walk back, DAM4SAM's
RAM walk, area median and distractor test, SAM2Long's pruning and key weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from samv2_jax.config import get_config
from samv2_jax.tracking.bank import empty_bank, write
from samv2_jax.tracking.policies import dam4sam, sam2long, samurai
from samv2_jax.tracking.policies.gated import gated_recent

# --- SAMURAI's Kalman filter against the textbook equations in float64 -------------------

def _np_filter():
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)
    h = np.eye(4, 8)
    wp, wv = 1 / 20, 1 / 160

    def initiate(z):
        s = z[3]
        std = [2 * wp * s, 2 * wp * s, 1e-2, 2 * wp * s, 10 * wv * s, 10 * wv * s, 1e-5,
               10 * wv * s]
        return np.r_[z, np.zeros(4)], np.diag(np.square(std))

    def predict(x, p):
        s = x[3]
        q = np.diag(np.square([wp * s, wp * s, 1e-2, wp * s, wv * s, wv * s, 1e-5, wv * s]))
        return f @ x, f @ p @ f.T + q

    def update(x, p, z):
        s = x[3]
        r = np.diag(np.square([wp * s, wp * s, 1e-1, wp * s]))
        big_s = h @ p @ h.T + r
        k = p @ h.T @ np.linalg.inv(big_s)
        return x + k @ (z - h @ x), p - k @ big_s @ k.T

    return initiate, predict, update


def test_kalman_filter_matches_a_direct_numpy_filter():
    initiate, predict, update = _np_filter()
    rng = np.random.default_rng(0)
    z0 = np.array([120.0, 80.0, 0.7, 60.0])
    x, p = initiate(z0)
    xj, pj = samurai.kf_initiate(jnp.asarray(z0, jnp.float32))
    for _ in range(20):
        x, p = predict(x, p)
        xj, pj = samurai.kf_predict(xj, pj)
        z = x[:4] + rng.normal(0, [3, 3, 0.02, 2])
        x, p = update(x, p, z)
        xj, pj = samurai.kf_update(xj, pj, jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(np.asarray(xj), x, rtol=2e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(pj), p, rtol=1e-3, atol=1e-4)
    assert np.abs(x[4:]).max() > 0.1  # velocities were learned, not left at zero


def test_boxes_of_masks_and_their_iou():
    m = np.full((2, 3, 20, 30), -1.0, np.float32)
    m[0, 0, 5:9, 10:20] = 1  # rows 5..8, cols 10..19
    m[0, 1, 0, 0] = 1
    boxes = np.asarray(samurai.mask_boxes(jnp.asarray(m)))
    np.testing.assert_array_equal(boxes[0, 0], [10, 5, 19, 8])
    np.testing.assert_array_equal(boxes[0, 1], [0, 0, 0, 0])  # a single pixel: zero box
    np.testing.assert_array_equal(boxes[1, 2], [0, 0, 0, 0])  # empty
    a = jnp.asarray([[0.0, 0, 10, 10]])
    b = jnp.asarray([[5.0, 5, 15, 15], [0, 0, 0, 0]])
    np.testing.assert_allclose(np.asarray(samurai.box_iou(a, b)), [25 / 175, 0.0])
    xyah = samurai.xyxy_to_xyah(jnp.asarray([2.0, 4, 8, 4]))  # zero height counts as 1
    np.testing.assert_allclose(np.asarray(xyah), [5, 4, 6, 1])


# --- the gated walk back, on a hand-made bank -------------------------------------------

CFG = get_config("sam2.1_hiera_tiny", image_size=64)


def _bank(frames, is_cond, iou, score, capacity=24):
    bank = empty_bank(CFG, 1, capacity, jnp.float32)
    e, d = CFG.embedding_size, CFG.memory.mem_dim
    for s, (t, c, i, o) in enumerate(zip(frames, is_cond, iou, score)):
        bank = write(bank, s, np.zeros((1, e, e, d)), np.zeros((1, CFG.hidden_dim)), t, c,
                     np.array([o]), iou=i, area=10.0 * (o > 0))
    return bank


def test_gated_walk_keeps_the_newest_passing_and_always_the_adjacent_frame():
    frames = list(range(12))
    iou = [1.0] + [0.9, 0.2, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.2, 0.9, 0.1]
    bank = _bank(frames, [True] + [False] * 11, iou, [5.0] * 12)
    passes = bank.iou > 0.5
    others = bank.valid & ~bank.is_cond
    slots, exists, length = gated_recent(CFG, bank, jnp.int32(12), jnp.bool_(False), passes,
                                         jnp.int32(4), 15, others)
    got = np.asarray(bank.frame_idx[0][slots[0]])[: int(length[0])]
    # frame 11 fails the gate but is the adjacent one; then the 4 newest passing: 10, 8, 7, 6
    np.testing.assert_array_equal(got, [11, 10, 8, 7, 6])
    assert bool(exists[0, :5].all()) and not bool(exists[0, 5:].any())
    # when the adjacent frame passes, it is one of the `limit`
    passes = passes.at[0, 11].set(True)
    slots, _, length = gated_recent(CFG, bank, jnp.int32(12), jnp.bool_(False), passes,
                                    jnp.int32(4), 15, others)
    np.testing.assert_array_equal(np.asarray(bank.frame_idx[0][slots[0]])[: int(length[0])],
                                  [11, 10, 8, 7])


# --- DAM4SAM ----------------------------------------------------------------------------

def test_ram_walk_skips_absent_frames_on_the_stride_lattice():
    # frames 0 (prompt) .. 23 tracked; the target is absent on 22 and 15
    frames = list(range(24))
    score = [5.0] * 24
    score[22] = score[15] = -5.0
    bank = _bank(frames, [True] + [False] * 23, [0.9] * 24, score, capacity=30)
    selected = bank.is_cond & bank.valid
    slots, found = dam4sam._ram(bank, jnp.int32(24), 5, 6, bank.area >= 1, selected)
    got = [int(bank.frame_idx[0, s]) for s, ok in zip(slots[0], found[0]) if ok]
    # 23 (adjacent, visible); lattice below 23: 20; then 15 is absent -> 10; 5; then 0 is
    # the prompt, not a tracked frame: the walk ends
    assert got == [23, 20, 10, 5]
    # the adjacent frame absent: the newest visible frame before it
    bank2 = _bank(frames, [True] + [False] * 23, [0.9] * 24,
                  [5.0] * 23 + [-5.0], capacity=30)
    slots, found = dam4sam._ram(bank2, jnp.int32(24), 5, 2, bank2.area >= 1,
                                bank2.is_cond & bank2.valid)
    assert [int(bank2.frame_idx[0, s]) for s in slots[0]] == [22, 20]


def test_area_median_over_the_recent_visible_frames():
    sizes = jnp.asarray([[10.0, 20, 30, 40], [5, 7, 0, 0]])
    entries = jnp.asarray([[1, 2, 3, 400], [0, 1, -1, -1]])
    med = np.asarray(dam4sam.recent_median(sizes, entries, jnp.asarray([401, 2]), 300))
    np.testing.assert_allclose(med, [40.0, 6.0])  # entries older than 300 are left out


def test_distractor_test_on_hand_made_masks():
    h, w = 40, 60
    chosen = np.zeros((h, w), bool)
    chosen[10:20, 10:20] = True
    near = chosen.copy()
    near[10:20, 20:22] = True         # the alternative only adds a thin strip: same object
    far = chosen.copy()
    far[25:35, 40:55] = True          # ... or a second blob away from it: a distractor
    far[2:4, 50:52] = True            # plus a smaller one (the largest part counts)
    alts = jnp.asarray(np.stack([np.stack([near, near]), np.stack([near, far])]))
    got = dam4sam.reveals_distractor(jnp.asarray(np.stack([chosen, chosen])), alts, 0.7)
    assert list(np.asarray(got)) == [False, True]
    # an alternative inside the chosen mask reveals nothing
    inside = jnp.asarray(np.stack([np.stack([chosen, chosen])]))
    assert not bool(dam4sam.reveals_distractor(jnp.asarray(chosen[None]), inside, 0.7)[0])


# --- SAM2Long ---------------------------------------------------------------------------

def test_pruning_keeps_the_best_cumulative_scores_when_certain():
    acc = jnp.asarray([[0.0, -1.0, -2.0]])
    ious = jnp.asarray([[[0.9, 0.5, 0.1], [0.95, 0.9, 0.2], [0.99, 0.1, 0.1]]])
    obj = jnp.asarray([[5.0, 4.0, 3.0]])  # confident: plain top 3
    parent, index, score = sam2long.prune(acc, ious, obj, 3, 2.0)
    s = np.asarray(acc)[0][:, None] + np.log(np.asarray(ious)[0] + 1e-5)
    flat = np.argsort(-s.ravel(), kind="stable")[:3]
    np.testing.assert_array_equal(np.asarray(parent)[0], flat // 3)
    np.testing.assert_array_equal(np.asarray(index)[0], flat % 3)
    np.testing.assert_allclose(np.asarray(score)[0], s.ravel()[flat], rtol=1e-6)


def test_pruning_diversity_rule_when_uncertain():
    # three identical pathways (as after the first tracked frame), uncertain object score
    ious = jnp.asarray([[[0.80, 0.801, 0.5]] * 3])
    obj = jnp.asarray([[1.0, 1.0, 1.0]])
    parent, index, _ = sam2long.prune(jnp.zeros((1, 3)), ious, obj, 3, 2.0)
    # 0.801 and 0.80 round alike: the second survivor is the 0.5 mask; then pathway 1 (not
    # represented) adds its best candidate
    assert list(np.asarray(parent)[0]) == [0, 0, 1]
    assert list(np.asarray(index)[0]) == [1, 2, 1]
    # the presence sign separates equal IoUs
    ious = jnp.asarray([[[0.7, 0.7, 0.7], [0.7, 0.7, 0.7]]])
    parent, index, _ = sam2long.prune(jnp.zeros((1, 2)), ious, jnp.asarray([[1.0, -1.0]]), 2,
                                      2.0)
    assert list(np.asarray(parent)[0]) == [0, 1]


def test_key_weights_follow_the_score_rank():
    w = sam2long.rank_weights(jnp.asarray([[10.0, 0.5, 3.0, 9.0], [1.0, 2.0, 0, 0]]),
                              jnp.asarray([[True, True, True, False], [True, False, False,
                                                                       False]]))
    np.testing.assert_allclose(np.asarray(w)[0, :3], [1.05, 0.95, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w)[1], 1.0)  # a single memory is not re-weighted


@pytest.mark.parametrize("name", ["official", "samurai", "dam4sam", "sam2long", "sam3"])
def test_policies_are_hashable_with_published_defaults(name):
    from samv2_jax.tracking.policies import policy_by_name

    a, b = policy_by_name(name), policy_by_name(name)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(ValueError, match="unknown memory policy"):
        policy_by_name("nope")
