"""Forward and gradient parity through a whole clip: our `_forward` + `clip_loss` against the
official `training.model.sam2.SAM2Train` + `MultiStepMultiMasksAndIous` + `backward()`.

Both sides hold the same re-drawn tensors and see the same 8-frame clip (128 x 128) of real texture
(scikit-image's astronaut, a window sliding over it) with three moving objects, one of them
absent on one frame; dropout and drop_path are off. Two cases per model share one compiled
program (the plan is a traced argument; sam2.0 tiny runs the second case only, to keep
the file's time):
- "mask": the GT mask on frame 0 only, no corrections (the official needs nothing extra);
- "points": a plan drawn by `sample_plan` with point input and corrections; the official is
  handed the choices, clicks and boxes we drew (`train_oracle.ScriptedRng`,
  `train_oracle.replayed_prompts`).
Asserted: every frame's every decoder step (low- and input-resolution multimask logits, IoU
predictions, object scores) within 1e-4 relative, the loss and its terms within 1e-5
relative, and the gradient of every parameter tensor within 1e-3 of that tensor's largest
official gradient (tensors whose official gradient is below 1e-6 of the model's largest:
within 1e-6 of the model's largest), but for the few elements a ReLU tie moves (KINK_SHARE).
"""

import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_oracle  # noqa: E402

from samv2_jax.train import TrainConfig  # noqa: E402
from samv2_jax.train.data.augment import normalize_images  # noqa: E402
from samv2_jax.train.forward import _forward, high_res_logits  # noqa: E402
from samv2_jax.train.loss import TERMS, clip_loss  # noqa: E402
from samv2_jax.train.prompts import PROMPT_BOX, PROMPT_CLICK, ClipPlan, sample_plan  # noqa: E402
from samv2_jax.weights.layout import flatten, to_torch_layout  # noqa: E402
from samv2_jax.weights.official import convert_state_dict  # noqa: E402

from official import rel_err  # noqa: E402
from video_scripts import PRESENT, disk_mask, make_frames  # noqa: E402

# 128 keeps the file within its time (two compiled programs of ~100 s each on 2 shared cores);
# the same cases at 256 pass with the same margins (worst gradient error 8.8e-4 and 5.1e-4).
SIZE, T, N_OBJ = 128, 8, 3
TRAIN_CFG = TrainConfig().deterministic()
OUT_TOL, LOSS_TOL, GRAD_TOL, GRAD_FLOOR = 1e-4, 1e-5, 1e-3, 1e-6
# Memory attention's MLP is a ReLU: a pre-activation within float32 rounding of 0 falls on
# different sides of the kink in torch and XLA, and that token's share of the gradient then
# moves to or from a hidden unit. Some 3e6 pre-activations per clip make a few such ties
# likely; which ones depends on the CPU's kernels. Seen on one machine (Xeon, 480 MiB L3)
# for box_then_track: 2 of 2048 units of memory_attention.layers.2.linear1 (bias error 7.4e-3),
# which also reaches norm3.weight before it (1 of 256 elements at 1.1e-3). So a tensor may
# have up to 1% of its elements off by more than GRAD_TOL, none by more than KINK_TOL.
KINK_SHARE, KINK_TOL = 1e-2, 1e-2


@functools.lru_cache(maxsize=1)
def _models(name):
    model = train_oracle.build_sam2_train(name, SIZE, TRAIN_CFG, seed=0,
                                          obj_score_shift=PRESENT)
    cfg, params = convert_state_dict(train_oracle.state_dict_numpy(model), image_size=SIZE)
    return model, cfg, jax.tree.map(jnp.asarray, params)


@functools.lru_cache(maxsize=1)
def _clip():
    """images [T, S, S, 3] normalised, masks [T, O, S, S] bool."""
    frames = make_frames(T, SIZE, SIZE, step=6)
    masks = np.zeros((T, N_OBJ, SIZE, SIZE), bool)
    for t in range(T):
        u = SIZE / 256  # positions and radii drawn for 256 pixels
        masks[t, 0] = disk_mask(SIZE, SIZE, u * (90 + 4 * t), u * (80 + 5 * t), u * 38)
        masks[t, 1] = disk_mask(SIZE, SIZE, u * (170 - 3 * t), u * (180 - 2 * t), u * 30)
        masks[t, 2] = disk_mask(SIZE, SIZE, u * (60 + 2 * t), u * (190 - 6 * t),
                                u * 22) & ~masks[t, 1]
    masks[6, 2] = False  # an object that leaves one frame
    return normalize_images(frames), masks


def _batch():
    images, masks = _clip()
    return {"images": jnp.asarray(images[None]), "masks": jnp.asarray(masks[None]),
            "obj_valid": jnp.ones((1, N_OBJ), bool)}


def _mask_plan() -> ClipPlan:
    n = TRAIN_CFG.num_correction_pt_per_frame
    first = np.arange(T) == 0
    return ClipPlan(use_pt_input=jnp.asarray(False), order=jnp.arange(T, dtype=jnp.int32),
                    is_init_cond=jnp.asarray(first), is_corrected=jnp.zeros(T, bool),
                    init_prompt=jnp.zeros(T, jnp.int32), sample_from_gt=jnp.zeros((T, n), bool))


def _plan_key(kind: str):
    """The first key whose plan (as `_forward` would draw it from the key) has point input
    and what `kind` asks for:
    "box_then_track": one initial conditioning frame prompted by a box, one later frame
      tracked from memory and then corrected, a correction click drawn from the GT alone;
    "two_clicks": two initial conditioning frames, at least one prompted by a click."""
    draw = jax.jit(lambda k: sample_plan(TRAIN_CFG, jax.random.split(k, 4)[0], T))
    for seed in range(500):
        key = jax.random.PRNGKey(seed)
        plan = jax.device_get(draw(key))
        init, corr = plan.is_init_cond, plan.is_corrected
        if not plan.use_pt_input:
            continue
        if kind == "box_then_track":
            ok = (init.sum() == 1 and plan.init_prompt[0] == PROMPT_BOX
                  and (corr & ~init).sum() == 1 and plan.sample_from_gt[corr].any())
        else:
            ok = init.sum() == 2 and (plan.init_prompt[init] == PROMPT_CLICK).any()
        if ok:
            return key, jax.tree.map(jnp.asarray, plan)
    raise AssertionError(f"no key in range(500) gives a {kind} plan")


@functools.partial(jax.jit, static_argnames=("model_cfg", "train_cfg"))
def _ours(params, batch, key, plan, model_cfg, train_cfg):
    def objective(p):
        out = _forward(p, model_cfg, train_cfg, batch, key, plan)
        loss, aux = clip_loss(model_cfg, train_cfg, out, batch)
        return loss, (aux, out)

    (loss, (aux, out)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    out.pop("plan")
    return loss, aux, out, grads


@functools.partial(jax.jit, static_argnames="model_cfg")
def _high_res(model_cfg, low, gt, as_output):
    return high_res_logits(model_cfg, low, gt, as_output)


def _check_outputs(cfg, out, frames, masks, plan):
    steps_run = 0
    for t, fr in enumerate(frames):
        n_steps = len(fr["multistep_pred_multimasks"])
        expected = 1 + TRAIN_CFG.num_correction_pt_per_frame if plan.is_corrected[t] else 1
        assert n_steps == expected, (t, n_steps)
        assert np.asarray(out["step_valid"][0, t]).sum() == n_steps
        for k in range(n_steps):
            low = np.asarray(out["low_res_multimasks"][0, t, k])
            high = np.asarray(_high_res(cfg, out["low_res_multimasks"][0, t, k],
                                        jnp.asarray(masks[t]), out["mask_as_output"][0, t]))
            theirs = {name: fr[f"multistep_{name}"][k].detach().numpy() for name in
                      ("pred_multimasks", "pred_multimasks_high_res", "pred_ious",
                       "object_score_logits")}
            m = theirs["pred_ious"].shape[1]
            assert bool(out["multimask"][0, t, k]) == (m == 3), (t, k)
            if m == 1:  # a one-mask step repeats its mask in every slot
                assert np.array_equal(low[:, 1:], np.repeat(low[:, :1], 2, 1))
            where = f"frame {t} step {k}"
            for o in range(N_OBJ):
                assert rel_err(low[o, :m], theirs["pred_multimasks"][o]) < OUT_TOL, where
                assert rel_err(high[o, :m], theirs["pred_multimasks_high_res"][o]) < OUT_TOL, where
            assert rel_err(np.asarray(out["ious"][0, t, k])[:, :m],
                           theirs["pred_ious"]) < OUT_TOL, where
            assert rel_err(out["object_score_logits"][0, t, k],
                           theirs["object_score_logits"]) < OUT_TOL, where
            steps_run += 1
    return steps_run


def _check_grads(grads, official_grads):
    ours = {k: to_torch_layout(k, np.asarray(v)) for k, v in flatten(grads).items()}
    unknown = set(official_grads) - set(ours)
    assert not unknown, f"official parameters without a counterpart: {sorted(unknown)[:5]}"
    top = max(np.abs(g).max() for g in official_grads.values())
    worst = (0.0, None)
    for name, g in ours.items():
        theirs = official_grads.get(name)
        if theirs is None:  # unused by the official (no grad) or a buffer: ours must be 0
            assert np.abs(g).max() <= GRAD_FLOOR * top, name
            continue
        scale = np.abs(theirs).max()
        if scale < GRAD_FLOOR * top:
            assert np.abs(g - theirs).max() <= GRAD_FLOOR * top, name
        else:
            err = rel_err(g, theirs)
            worst = max(worst, (err, name))
            if err >= GRAD_TOL:  # only the few elements a ReLU kink moves may be off
                off = np.abs(g - theirs) >= GRAD_TOL * scale
                assert off.mean() <= KINK_SHARE and err < KINK_TOL, (
                    name, err, int(off.sum()), off.size)
    return worst


@pytest.mark.parametrize("name,kind", [
    ("sam2.1_hiera_tiny", "mask"), ("sam2.1_hiera_tiny", "box_then_track"),
    ("sam2_hiera_tiny", "two_clicks"),
])
def test_clip_forward_and_gradients(name, kind):
    model, cfg, params = _models(name)
    images, masks = _clip()
    if kind == "mask":
        key, plan = jax.random.PRNGKey(0), _mask_plan()
    else:
        key, plan = _plan_key(kind)
    loss, aux, out, grads = _ours(params, _batch(), key, plan, cfg, TRAIN_CFG)
    plan_np = jax.device_get(plan)
    frames, vals, official_grads = train_oracle.official_step(model, images, masks, out,
                                                              plan_np, TRAIN_CFG)
    steps = _check_outputs(cfg, out, frames, masks, plan_np)
    assert steps == (T if kind == "mask" else T + 7 * int(plan_np.is_corrected.sum()))
    core = vals["core_loss"]
    assert abs(float(loss) - core) <= LOSS_TOL * abs(core), (float(loss), core)
    for term in TERMS:
        assert abs(float(aux[term]) - vals[term]) <= LOSS_TOL * abs(core), term
    worst, where = _check_grads(grads, official_grads)
    print(f"{name} {kind}: loss {float(loss):.6g} vs {core:.6g}, worst grad error {worst:.2e} "
          f"({where})")
