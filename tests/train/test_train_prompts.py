"""The prompt simulation follows the official distributions: frame choices, prompt types,
click positions and labels, box noise (many draws on both sides, tolerances from the sample
size: 5 standard errors)."""

import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import torch

from samv2_jax.train import TrainConfig
from samv2_jax.train.prompts import (
    PROMPT_BOX,
    PROMPT_MASK,
    mask_to_box,
    sample_box_points,
    sample_plan,
    sample_points_from_errors,
)

N = 4000
T = 6


def _close(p_ours, p_ref, n_ours, n_ref, what):
    p = (p_ours * n_ours + p_ref * n_ref) / (n_ours + n_ref)
    tol = 5 * np.sqrt(max(p * (1 - p), 1e-4) * (1 / n_ours + 1 / n_ref)) + 1e-9
    assert abs(p_ours - p_ref) <= tol, (what, p_ours, p_ref, tol)


def _official_plans(cfg, n, seed=0):
    """Draw n plans with the official `prepare_prompt_inputs` (its samplers stubbed)."""
    import training.model.sam2 as sam2_train

    me = types.SimpleNamespace(
        training=True, rng=np.random.default_rng(seed),
        prob_to_use_pt_input_for_train=cfg.prob_to_use_pt_input_for_train,
        prob_to_use_box_input_for_train=cfg.prob_to_use_box_input_for_train,
        num_frames_to_correct_for_train=cfg.num_frames_to_correct_for_train,
        rand_frames_to_correct_for_train=cfg.rand_frames_to_correct_for_train,
        num_init_cond_frames_for_train=cfg.num_init_cond_frames_for_train,
        rand_init_cond_frames_for_train=cfg.rand_init_cond_frames_for_train)
    calls = []
    saved = sam2_train.get_next_point, sam2_train.sample_box_points
    sam2_train.get_next_point = lambda gt_masks, pred_masks, method: calls.append("click") or (
        None, None)
    sam2_train.sample_box_points = lambda masks: calls.append("box") or (None, None)
    batch = types.SimpleNamespace(masks=torch.zeros(T, 1, 2, 2, dtype=torch.bool), num_frames=T)
    plans = []
    try:
        for _ in range(n):
            calls.clear()
            out = sam2_train.SAM2Train.prepare_prompt_inputs(me, {}, batch)
            plans.append((out["use_pt_input"], tuple(sorted(out["init_cond_frames"])),
                          tuple(sorted(out["frames_to_add_correction_pt"])), tuple(calls)))
    finally:
        sam2_train.get_next_point, sam2_train.sample_box_points = saved
    return plans


def _our_plans(cfg, n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    p = jax.jit(jax.vmap(lambda k: sample_plan(cfg, k, T)))(keys)
    p = jax.tree.map(np.asarray, p)
    plans = []
    for i in range(n):
        init = tuple(np.flatnonzero(p.is_init_cond[i]).tolist())
        corr = tuple(np.flatnonzero(p.is_corrected[i]).tolist())
        use_pt = bool(p.use_pt_input[i])
        kinds = tuple("box" if p.init_prompt[i][f] == PROMPT_BOX else "click"
                      for f in p.order[i] if p.is_init_cond[i][f]) if use_pt else ()
        assert use_pt or all(p.init_prompt[i] == PROMPT_MASK)
        # The processing order: prompted frames first, then the rest in time order.
        order = p.order[i].tolist()
        rest = [f for f in range(T) if f not in init]
        assert sorted(order[: len(init)]) == list(init) and order[len(init):] == rest
        plans.append((use_pt, init, corr, kinds))
    return plans, p


def test_plans_follow_the_official_distribution():
    cfg = TrainConfig()
    ours, arrays = _our_plans(cfg, N)
    ref = _official_plans(cfg, N)
    assert all(0 in p[1] for p in ours)  # frame 0 is always prompted

    def stats(plans):
        c = collections.Counter()
        for use_pt, init, corr, kinds in plans:
            c[("pt", use_pt)] += 1
            c[("n_init", len(init))] += 1
            c[("n_corr", len(corr))] += 1
            c[("pt_n_init_n_corr", use_pt, len(init), len(corr))] += 1
            for f in init:
                c[("init", f)] += 1
            for f in corr:
                c[("corr", f, f in init)] += 1
            for k in kinds:
                c[("kind", k)] += 1
            c[("calls", len(kinds))] += 1
        return c

    a, b = stats(ours), stats(ref)
    assert set(a) == set(b), set(a) ^ set(b)
    for key in a:
        _close(a[key] / N, b[key] / N, N, N, key)
    # Point input on about half the clips, corrections only then; per correction a draw
    # from the ground truth with probability 0.1.
    use_pt = arrays.use_pt_input
    assert not arrays.is_corrected[~use_pt].any()
    gt = arrays.sample_from_gt.reshape(-1)
    _close(gt.mean(), cfg.prob_to_sample_from_gt_for_train, gt.size, 10 ** 9, "from_gt")


def test_plans_of_other_settings_and_still_images():
    cfg = TrainConfig(num_init_cond_frames_for_train=3, num_frames_to_correct_for_train=4,
                      rand_init_cond_frames_for_train=False, prob_to_use_pt_input_for_train=0.8)
    ours, _ = _our_plans(cfg, 1500, seed=1)
    ref = _official_plans(cfg, 1500, seed=1)
    for fn in (lambda p: p[0], lambda p: len(p[1]), lambda p: len(p[2])):
        a, b = collections.Counter(map(fn, ours)), collections.Counter(map(fn, ref))
        assert set(a) == set(b)
        for k in a:
            _close(a[k] / 1500, b[k] / 1500, 1500, 1500, k)
    # One frame: point input always, the frame corrected.
    p = jax.tree.map(np.asarray, jax.vmap(lambda k: sample_plan(TrainConfig(), k, 1))(
        jax.random.split(jax.random.key(2), 200)))
    assert p.use_pt_input.all() and p.is_corrected.all() and p.is_init_cond.all()


def _regions(h=40, w=50):
    yy, xx = np.mgrid[:h, :w]
    gt = (yy > 5) & (yy < 30) & (xx > 8) & (xx < 40)
    pred = (yy > 12) & (yy < 34) & (xx > 4) & (xx < 30)
    return gt, pred


def test_clicks_are_uniform_in_the_error_region_with_the_right_labels():
    from sam2.modeling.sam2_utils import sample_random_points_from_errors

    gt, pred = _regions()
    n = 20000
    keys = jax.random.split(jax.random.key(0), n // 4)
    gt4 = jnp.asarray(np.stack([gt] * 4))
    pr4 = jnp.asarray(np.stack([pred] * 4))
    xy, lab = jax.jit(jax.vmap(lambda k: sample_points_from_errors(k, gt4, pr4)))(keys)
    xy = np.asarray(xy).reshape(-1, 2).astype(int)
    lab = np.asarray(lab).reshape(-1)
    fp, fn = ~gt & pred, gt & ~pred
    at = (xy[:, 1], xy[:, 0])
    assert (fp[at] | fn[at]).all()  # always inside the error region
    assert (lab == fn[at]).all()  # a missed pixel gives a positive click, a false one negative
    torch.manual_seed(0)
    ref_xy, ref_lab = sample_random_points_from_errors(
        torch.from_numpy(gt)[None, None].expand(n, 1, *gt.shape).contiguous(),
        torch.from_numpy(pred)[None, None].expand(n, 1, *gt.shape).contiguous())
    ref_xy, ref_lab = ref_xy[:, 0].numpy(), ref_lab[:, 0].numpy()
    p_pos = fn.sum() / (fn.sum() + fp.sum())
    _close(lab.mean(), p_pos, n, 10 ** 9, "positive share")
    _close(lab.mean(), ref_lab.mean(), n, n, "positive share vs official")
    # Uniform over the region: the share of clicks in each quarter of the image matches the
    # share of error pixels there, for us and the official.
    err = fp | fn
    h, w = gt.shape
    for qy in (slice(0, h // 2), slice(h // 2, h)):
        for qx in (slice(0, w // 2), slice(w // 2, w)):
            share = err[qy, qx].sum() / err.sum()
            inq = lambda p, qy=qy, qx=qx: ((p[:, 1] >= qy.start) & (p[:, 1] < qy.stop)
                                           & (p[:, 0] >= qx.start) & (p[:, 0] < qx.stop)).mean()
            _close(inq(xy), share, n, 10 ** 9, "quarter")
            _close(inq(ref_xy.astype(int)), share, n, 10 ** 9, "official quarter")


def test_click_edge_cases_match_the_official():
    from sam2.modeling.sam2_utils import sample_random_points_from_errors

    gt, _ = _regions()
    empty = np.zeros_like(gt)
    cases = {"perfect": (gt, gt), "no gt, no pred": (empty, empty), "from gt": (gt, None)}
    for name, (g, p) in cases.items():
        xy, lab = sample_points_from_errors(jax.random.key(1), jnp.asarray(np.stack([g] * 64)),
                                            None if p is None else jnp.asarray(np.stack([p] * 64)))
        xy = np.asarray(xy)[:, 0].astype(int)
        lab = np.asarray(lab)[:, 0]
        ref_xy, ref_lab = sample_random_points_from_errors(
            torch.from_numpy(np.stack([g] * 64))[:, None],
            None if p is None else torch.from_numpy(np.stack([p] * 64))[:, None])
        ref_xy = ref_xy[:, 0].numpy().astype(int)
        inside_gt = g[xy[:, 1], xy[:, 0]]
        ref_inside = g[ref_xy[:, 1], ref_xy[:, 0]]
        assert (lab == ref_lab[:, 0].numpy()).all(), name  # same labels
        assert (inside_gt == ref_inside).all(), name  # same region
        if name == "from gt":
            assert lab.all() and inside_gt.all()
        else:  # nothing to correct: a negative click in the background
            assert not lab.any() and not inside_gt.any()
        assert len({tuple(x) for x in xy}) > 16, name  # spread, not one fixed pixel


def test_boxes_follow_the_official_noise():
    from sam2.modeling.sam2_utils import sample_box_points as official_boxes
    from sam2.utils.misc import mask_to_box as official_mask_to_box

    h, w = 120, 260
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack([(yy > 20) & (yy < 90) & (xx > 10) & (xx < 240),  # bound at 20 px in x
                      (yy > 100) & (xx > 245),  # at the border: clamped
                      np.zeros((h, w), bool)])  # empty
    box = np.asarray(mask_to_box(jnp.asarray(masks)))
    assert (box == official_mask_to_box(torch.from_numpy(masks)[:, None])[:, 0].numpy()).all()
    n = 2000
    xy, lab = jax.jit(jax.vmap(lambda k: sample_box_points(k, jnp.asarray(masks))))(
        jax.random.split(jax.random.key(0), n))
    xy = np.asarray(xy).reshape(n, 3, 4)
    assert (np.asarray(lab) == np.array([2, 3])).all()
    torch.manual_seed(0)
    ref = torch.from_numpy(np.concatenate([masks] * n))[:, None]
    ref_xy, ref_lab = official_boxes(ref)
    ref_xy = ref_xy.numpy().reshape(n, 3, 4)
    assert (ref_lab.numpy() == np.array([2, 3])).all()
    assert (xy >= 0).all() and (xy[..., ::2] <= w - 1).all() and (xy[..., 1::2] <= h - 1).all()
    for o in range(3):
        for c in range(4):
            a, b = xy[:, o, c], ref_xy[:, o, c]
            sd = max(b.std(), 1e-3)
            assert abs(a.mean() - b.mean()) <= 5 * sd * np.sqrt(2 / n) + 1e-6, (o, c)
            assert abs(a.std() - b.std()) <= 0.1 * sd + 1e-6, (o, c)
            assert abs(a.min() - b.min()) <= 0.05 * sd * 10 + 1e-4, (o, c)
            assert abs(a.max() - b.max()) <= 0.05 * sd * 10 + 1e-4, (o, c)
    # Noise up to 10% of the side, at most 20 px: the wide box's x corners move 20 px.
    d = xy[:, 0] - box[0]
    assert np.abs(d[:, 0]).max() <= 20 and np.abs(d[:, 0]).max() > 19
    assert np.abs(d[:, 1]).max() <= 0.1 * (box[0, 3] - box[0, 1]) + 1e-4
