"""The loss equals the official `MultiStepMultiMasksAndIous`, every term and its gradient."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_oracle  # noqa: E402

from samv2_jax.train import LossConfig  # noqa: E402
from samv2_jax.train.loss import TERMS, multistep_loss  # noqa: E402

S, N_OBJ = 24, 3
# Frames as lists of decoder steps, each with its number of masks (3: multimask, 1: one).
FRAMES = [[3, 1, 1, 1], [3], [1, 1], [3, 1]]


def _case(seed):
    rng = np.random.default_rng(seed)
    t, k = len(FRAMES), max(len(f) for f in FRAMES)
    yy, xx = np.mgrid[:S, :S]
    masks = np.zeros((t, N_OBJ, S, S), bool)
    for f in range(t):
        for o in range(N_OBJ):
            cy, cx, r = rng.uniform(4, S - 4, 2).tolist() + [rng.uniform(3, 8)]
            masks[f, o] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    masks[1, 0] = False  # absent objects
    masks[3, 2] = False
    # Logits loosely following the masks, so every term (and the argmin) is exercised.
    logits = rng.normal(0, 3, (t, k, N_OBJ, 3, S, S)) + 4 * (masks[:, None, :, None] - 0.5)
    ious = rng.uniform(0, 1, (t, k, N_OBJ, 3))
    obj = rng.normal(0, 2, (t, k, N_OBJ, 1))
    multimask = np.zeros((t, k), bool)
    valid = np.zeros((t, k), bool)
    for f, steps in enumerate(FRAMES):
        for j, m in enumerate(steps):
            valid[f, j] = True
            multimask[f, j] = m == 3
            if m == 1:  # a one-mask step repeats its mask in every slot
                logits[f, j, :, 1:] = logits[f, j, :, :1]
                ious[f, j, :, 1:] = ious[f, j, :, :1]
    return [x.astype(np.float32) for x in (logits, ious, obj)] + [multimask, valid, masks]


def _official(logits, ious, obj, masks, loss_cfg, keep):
    """The official loss on the objects `keep`, with its gradients w.r.t. the inputs."""
    outs, leaves = [], []
    for f, steps in enumerate(FRAMES):
        d = {"multistep_pred_multimasks_high_res": [], "multistep_pred_ious": [],
             "multistep_object_score_logits": []}
        for j, m in enumerate(steps):
            lg = torch.tensor(logits[f, j][keep][:, :m], requires_grad=True)
            io = torch.tensor(ious[f, j][keep][:, :m], requires_grad=True)
            ob = torch.tensor(obj[f, j][keep], requires_grad=True)
            leaves.append((f, j, m, lg, io, ob))
            d["multistep_pred_multimasks_high_res"].append(lg)
            d["multistep_pred_ious"].append(io)
            d["multistep_object_score_logits"].append(ob)
        outs.append(d)
    losses = train_oracle.official_loss_module(loss_cfg)(outs, torch.tensor(masks[:, keep]))
    losses["core_loss"].backward()
    return {k: float(v.detach()) for k, v in losses.items()}, leaves


@pytest.mark.parametrize("loss_cfg", [LossConfig(), LossConfig(supervise_all_iou=False,
                                                               iou_use_l1_loss=False,
                                                               focal_alpha_obj_score=0.25,
                                                               focal_gamma_obj_score=2.0)],
                         ids=["recipe", "mse-best-iou-focal-class"])
def test_loss_terms_and_gradients_equal_the_official(loss_cfg):
    logits, ious, obj, multimask, valid, masks = _case(0)
    # Object 1 is padding: ours must equal the official on the batch without it.
    obj_valid = np.array([True, False, True])
    keep = np.flatnonzero(obj_valid)
    ref, leaves = _official(logits, ious, obj, masks, loss_cfg, keep)

    def ours(lg, io, ob):
        out = {"multimask_logits": lg[None], "ious": io[None], "object_score_logits": ob[None],
               "multimask": jnp.asarray(multimask)[None], "step_valid": jnp.asarray(valid)[None]}
        return multistep_loss(out, jnp.asarray(masks)[None], jnp.asarray(obj_valid)[None],
                              loss_cfg)

    (loss, aux), grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2), has_aux=True))(
        jnp.asarray(logits), jnp.asarray(ious), jnp.asarray(obj))
    assert float(aux["num_objects"]) == len(keep)
    for term in TERMS:
        assert ref[term] > 0, term  # every term is exercised
        np.testing.assert_allclose(float(aux[term]), ref[term], rtol=1e-5, err_msg=term)
    np.testing.assert_allclose(float(loss), ref["core_loss"], rtol=1e-5)
    np.testing.assert_allclose(float(aux["per_frame"]["core_loss"].sum()), ref["core_loss"],
                               rtol=1e-5)
    g_lg, g_io, g_ob = (np.asarray(g) for g in grads)
    for f, j, m, lg, io, ob in leaves:
        # Repeated slots of a one-mask step share the gradient of its single mask.
        ours_lg = g_lg[f, j][keep][:, :m] if m == 3 else g_lg[f, j][keep].sum(1, keepdims=True)
        ours_io = g_io[f, j][keep][:, :m] if m == 3 else g_io[f, j][keep].sum(1, keepdims=True)
        for a, b in ((ours_lg, lg.grad), (ours_io, io.grad), (g_ob[f, j][keep], ob.grad)):
            b = b.numpy()
            assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max() + 1e-12, (f, j)
    # Padding and steps that did not run get no gradient.
    assert np.abs(g_lg[:, :, 1]).max() == 0
    assert np.abs(g_lg[~valid]).max() == 0
