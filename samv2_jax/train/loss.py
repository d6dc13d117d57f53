"""The training loss: official `training.loss_fns.MultiStepMultiMasksAndIous`.

Per frame and decoder step: sigmoid focal loss and dice loss of every mask output against the
GT mask, the multimask output with the lowest `weight_mask * focal + weight_dice * dice`
taking the mask terms; the predicted IoU regressed (L1 or MSE) to the true IoU of every
output (`supervise_all_iou`) or of the chosen one; BCE of the object score against "the
object is in this frame". Mask and IoU terms count only where the object is present. Every
term is summed over objects, steps and frames and divided by the number of valid objects in
the batch (padded objects count for nothing), which is what the official's normalisation
amounts to under data parallelism (sum over the global batch / its number of objects).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.train.config import LossConfig, TrainConfig
from samv2_jax.train.forward import _forward, high_res_logits

TERMS = ("loss_mask", "loss_dice", "loss_iou", "loss_class")


def sigmoid_focal_loss(logits, targets, alpha: float, gamma: float):
    """Elementwise focal loss (official `sigmoid_focal_loss` before its reduction)."""
    logits = logits.astype(jnp.float32)
    prob = jax.nn.sigmoid(logits)
    # BCE with logits in its stable form, as torch computes it.
    ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    loss = ce
    if gamma != 0:  # (1 - p_t) ** 0 is 1; its derivative at 0 would be 0 * inf
        p_t = prob * targets + (1 - prob) * (1 - targets)
        loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def mask_terms(logits, target, cfg: LossConfig):
    """Per-mask terms of one step: logits [O, M, S, S], target [O, S, S] float 0/1, both at
    the input resolution -> (focal [O, M], dice [O, M], true IoU [O, M])."""
    t = target[:, None]
    focal = sigmoid_focal_loss(logits, t, cfg.focal_alpha, cfg.focal_gamma).mean(axis=(-2, -1))
    prob = jax.nn.sigmoid(logits.astype(jnp.float32))
    num = 2 * (prob * t).sum(axis=(-2, -1))
    den = prob.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1))
    dice = 1 - (num + 1) / (den + 1)
    pred = logits > 0
    gt = t > 0
    inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
    return focal, dice, inter / jnp.maximum(union, 1.0)


def step_losses(logits, ious, object_score_logits, multimask, target, cfg: LossConfig):
    """One decoder step's terms per object, before normalisation: dict of [O] arrays.

    logits [O, M, S, S], ious [O, M], object_score_logits [O, 1], multimask: bool (False:
    slot 0 is the only output), target [O, S, S] bool.
    """
    t = jnp.asarray(target, jnp.float32)
    focal, dice, true_iou = mask_terms(logits, t, cfg)
    ious = ious.astype(jnp.float32)
    err = jnp.abs(ious - true_iou) if cfg.iou_use_l1_loss else jnp.square(ious - true_iou)
    combo = cfg.weight_mask * focal + cfg.weight_dice * dice
    best = jnp.where(multimask, jnp.argmin(combo, axis=-1), 0)[:, None]
    pick = lambda x: jnp.take_along_axis(x, best, axis=1)[:, 0]
    loss_mask, loss_dice = pick(focal), pick(dice)
    if cfg.supervise_all_iou:
        loss_iou = jnp.where(multimask, err.mean(axis=-1), err[:, 0])
    else:
        loss_iou = pick(err)
    if cfg.pred_obj_scores:
        present = jnp.any(t > 0, axis=(-2, -1)).astype(jnp.float32)
        loss_class = sigmoid_focal_loss(object_score_logits, present[:, None],
                                        cfg.focal_alpha_obj_score,
                                        cfg.focal_gamma_obj_score).mean(axis=-1)
    else:
        present = jnp.ones(t.shape[:1], jnp.float32)
        loss_class = jnp.zeros(t.shape[:1], jnp.float32)
    return {"loss_mask": loss_mask * present, "loss_dice": loss_dice * present,
            "loss_iou": loss_iou * present, "loss_class": loss_class}


def frame_losses(logits, ious, object_score_logits, multimask, step_valid, target, obj_valid,
                 cfg: LossConfig):
    """One frame's terms summed over its valid steps and valid objects (unnormalised).

    logits [K, O, M, S, S], ious [K, O, M], object_score_logits [K, O, 1], multimask [K],
    step_valid [K], target [O, S, S], obj_valid [O]. -> dict of scalars.
    """
    per_step = jax.vmap(lambda lg, io, ob, mm: step_losses(lg, io, ob, mm, target, cfg))(
        logits, ious, object_score_logits, multimask)
    w = step_valid.astype(jnp.float32)[:, None] * obj_valid.astype(jnp.float32)[None]
    return {k: (v * w).sum() for k, v in per_step.items()}


def combine(terms, cfg: LossConfig):
    """The weighted total (official `reduce_loss`; zero weights are skipped)."""
    weights = {"loss_mask": cfg.weight_mask, "loss_dice": cfg.weight_dice,
               "loss_iou": cfg.weight_iou, "loss_class": cfg.weight_class}
    total = jnp.zeros((), jnp.float32)
    for k, w in weights.items():
        if w != 0:
            total = total + w * terms[k]
    return total


def num_valid_objects(obj_valid):
    """The normaliser: valid objects in the batch, at least 1."""
    return jnp.maximum(jnp.sum(jnp.asarray(obj_valid, jnp.float32)), 1.0)


def multistep_loss(outputs, masks, obj_valid, cfg: LossConfig):
    """`MultiStepMultiMasksAndIous` over outputs at the input resolution.

    outputs: {"multimask_logits" [B, T, K, O, M, S, S], "ious" [B, T, K, O, M],
    "object_score_logits" [B, T, K, O, 1], "multimask" [B, T, K], "step_valid" [B, T, K]}
    (the layout of `forward_clip`); masks [B, T, O, S, S] bool; obj_valid [B, O] bool.
    -> (loss, aux): aux has every term (normalised), "core_loss", "per_frame" (each term and
    the total per frame [T], summed over the batch) and "num_objects".
    """
    per_frame = jax.vmap(jax.vmap(
        lambda lg, io, ob, mm, sv, tg, ov: frame_losses(lg, io, ob, mm, sv, tg, ov, cfg),
        in_axes=(0, 0, 0, 0, 0, 0, None)))(
        outputs["multimask_logits"], outputs["ious"], outputs["object_score_logits"],
        outputs["multimask"], outputs["step_valid"], masks, obj_valid)
    return _reduce(per_frame, obj_valid, cfg)


def _reduce(per_frame, obj_valid, cfg: LossConfig):
    """per_frame: dict of [B, T] unnormalised sums -> (loss, aux)."""
    n = num_valid_objects(obj_valid)
    frame_terms = {k: v.sum(0) / n for k, v in per_frame.items()}  # [T]
    terms = {k: v.sum() for k, v in frame_terms.items()}
    loss = combine(terms, cfg)
    aux = dict(terms, core_loss=loss, num_objects=n,
               per_frame=dict(frame_terms, core_loss=combine(frame_terms, cfg)))
    return loss, aux


def clip_loss(model_cfg: SAM2Config, train_cfg: TrainConfig, out, batch):
    """The loss of `_forward`'s outputs: input-resolution logits are made frame by frame
    (recomputed in the backward pass), never for the whole clip at once."""
    masks = jnp.asarray(batch["masks"], bool)
    obj_valid = jnp.asarray(batch["obj_valid"], bool)
    cfg = train_cfg.loss
    b, t = masks.shape[:2]

    @jax.checkpoint
    def one_frame(xs):
        low, ious, obj, mm, sv, as_out, tg, ov = xs

        def steps(n):  # the first n decoder steps
            logits = high_res_logits(model_cfg, low[:n], tg[None], as_out)
            return frame_losses(logits, ious[:n], obj[:n], mm[:n], sv[:n], tg, ov, cfg)

        k = low.shape[0]
        if k == 1:
            return steps(1)
        # Frames without corrections have one step: skip the others' upsampling.
        return jax.lax.cond(sv[1:].any(), lambda: steps(k), lambda: steps(1))

    flat = lambda x: x.reshape(b * t, *x.shape[2:])
    xs = (flat(out["low_res_multimasks"]), flat(out["ious"]), flat(out["object_score_logits"]),
          flat(out["multimask"]), flat(out["step_valid"]), flat(out["mask_as_output"]),
          flat(masks), jnp.repeat(obj_valid, t, axis=0))
    per_frame = jax.lax.map(one_frame, xs)
    per_frame = {k: v.reshape(b, t) for k, v in per_frame.items()}
    return _reduce(per_frame, obj_valid, cfg)


def loss_fn(params, batch, key, *, model_cfg: SAM2Config, train_cfg: TrainConfig, plan=None):
    """The training objective of one batch: official `SAM2Train` forward +
    `MultiStepMultiMasksAndIous`.

    `jax.value_and_grad(loss_fn, has_aux=True)` is the training step (jit it with
    `model_cfg` and `train_cfg` static; it compiles once per batch shape). batch as for
    `forward_clip`; key: all the step's randomness. Returns (loss, aux) with aux as
    `multistep_loss` gives it plus "plan" (the prompts drawn). Frozen parameters
    (`train_cfg.frozen_patterns`) get no gradient computation at all.
    """
    out = _forward(params, model_cfg, train_cfg, batch, key, plan)
    loss, aux = clip_loss(model_cfg, train_cfg, out, batch)
    aux["plan"] = out["plan"]
    return loss, aux
