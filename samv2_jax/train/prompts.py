"""Prompt simulation for training: which frames are prompted and how, and the clicks and boxes.

Two kinds of randomness, as in the official `SAM2Train`:
- the clip's plan (`sample_plan`), drawn once for the whole batch: point or mask input, the
  initial conditioning frames, box or click on each, the frames that get correction clicks,
  and for each correction whether it is sampled from the ground truth instead of the error;
- per-object draws: a click uniformly inside an error region (`sample_points_from_errors`,
  official `sample_random_points_from_errors`) or a noisy ground-truth box
  (`sample_box_points`, official `sample_box_points`).
The official draws the plan with numpy's generator and the rest with torch; these follow the
same distributions (tests/train/test_train_prompts.py compares them over many draws).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from samv2_jax.train.config import TrainConfig

# How an initial conditioning frame is prompted.
PROMPT_MASK, PROMPT_CLICK, PROMPT_BOX = 0, 1, 2
# Point labels of the prompt encoder.
NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3


@flax.struct.dataclass
class ClipPlan:
    """The prompts of one clip, shared by every object of the batch (arrays over frames).

    order: processing order [T]: the initial conditioning frames first (ascending), then the
      others in time order (the official tracks all prompted frames before the rest).
    is_init_cond [T]: an initial conditioning frame (frame 0 always is).
    is_corrected [T]: gets correction clicks (with point input: every initial conditioning
      frame, plus randomly chosen others).
    init_prompt [T]: PROMPT_MASK, PROMPT_CLICK or PROMPT_BOX (meaningful where is_init_cond).
    sample_from_gt [T, num_correction_pt_per_frame]: that correction click is drawn from the
      ground-truth mask instead of the error region.
    """

    use_pt_input: jax.Array
    order: jax.Array
    is_init_cond: jax.Array
    is_corrected: jax.Array
    init_prompt: jax.Array
    sample_from_gt: jax.Array

    @property
    def num_frames(self) -> int:
        return self.order.shape[-1]


def _clip_settings(cfg: TrainConfig, num_frames: int):
    p_pt = cfg.prob_to_use_pt_input_for_train
    n_init, n_correct = cfg.num_init_cond_frames_for_train, cfg.num_frames_to_correct_for_train
    if num_frames == 1:  # a still image: always prompted with points, like the official
        return 1.0, 1, 1
    if n_init > num_frames or (p_pt > 0 and n_correct > num_frames):
        raise ValueError(
            f"a clip of {num_frames} frames cannot have num_init_cond_frames_for_train={n_init} "
            f"/ num_frames_to_correct_for_train={n_correct}; use longer clips or fewer "
            "prompted frames")
    return p_pt, n_init, n_correct


def _random_subset(key, eligible, count):
    """[T] bool: `count` (traced) frames chosen uniformly without replacement among the
    `eligible` ones."""
    score = jnp.where(eligible, jax.random.uniform(key, eligible.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(score))
    return eligible & (rank < count)


def sample_plan(cfg: TrainConfig, key, num_frames: int) -> ClipPlan:
    """Draw a clip's prompts (official `SAM2Train.prepare_prompt_inputs`, training mode).

    num_frames is static; everything else may be traced (jit- and vmap-friendly).
    """
    p_pt, n_init_max, n_correct_cfg = _clip_settings(cfg, num_frames)
    t = num_frames
    k_pt, k_ninit, k_ncorr, k_init, k_extra, k_box, k_gt = jax.random.split(key, 7)
    use_pt = jax.random.uniform(k_pt) < p_pt
    if cfg.rand_init_cond_frames_for_train and n_init_max > 1:
        n_init = jax.random.randint(k_ninit, (), 1, n_init_max + 1)
    else:
        n_init = jnp.asarray(n_init_max, jnp.int32)
    n_correct = jnp.asarray(n_correct_cfg, jnp.int32)
    if cfg.rand_frames_to_correct_for_train:
        drawn = jax.random.randint(k_ncorr, (), n_init, n_correct_cfg + 1)
        n_correct = jnp.where(use_pt & (n_correct_cfg > n_init), drawn, n_correct)

    frames = jnp.arange(t)
    is_init = (frames == 0) | _random_subset(k_init, frames > 0, n_init - 1)
    extra = jnp.where(use_pt, jnp.maximum(n_correct - n_init, 0), 0)
    is_extra = _random_subset(k_extra, ~is_init, extra)
    is_corrected = use_pt & (is_init | is_extra)
    box = jax.random.uniform(k_box, (t,)) < cfg.prob_to_use_box_input_for_train
    init_prompt = jnp.where(use_pt, jnp.where(box, PROMPT_BOX, PROMPT_CLICK), PROMPT_MASK)
    n_corr_pts = cfg.num_correction_pt_per_frame
    from_gt = jax.random.uniform(k_gt, (t, n_corr_pts)) < cfg.prob_to_sample_from_gt_for_train
    order = jnp.argsort(jnp.where(is_init, frames - t, frames)).astype(jnp.int32)
    return ClipPlan(use_pt_input=use_pt, order=order, is_init_cond=is_init,
                    is_corrected=is_corrected, init_prompt=init_prompt.astype(jnp.int32),
                    sample_from_gt=from_gt)


def sample_points_from_errors(key, gt_masks, pred_masks=None):
    """One click per object, uniformly inside its error region.

    Official counterpart: `sam2.modeling.sam2_utils.sample_random_points_from_errors`
    (num_pt=1). gt_masks, pred_masks: [O, H, W] bool (pred None: nothing predicted, so the
    click lands in the ground truth). A pixel predicted but not in the ground truth gives a
    negative click, one missed a positive click; a perfect prediction gives a negative click
    in the background. -> (coords [O, 1, 2] float32 (x, y) pixels, labels [O, 1] int32).
    """
    gt = jnp.asarray(gt_masks, bool)
    pred = jnp.zeros_like(gt) if pred_masks is None else jnp.asarray(pred_masks, bool)
    o, h, w = gt.shape
    false_pos = ~gt & pred
    false_neg = gt & ~pred
    all_correct = jnp.all(gt == pred, axis=(1, 2))[:, None, None]
    noise = jax.random.uniform(key, (o, h, w, 2))
    # The largest noise over the (negative, positive) candidate maps picks the pixel and,
    # with it, the label: a uniform draw over the union of the two regions.
    noise = noise * jnp.stack([false_pos | (all_correct & ~gt), false_neg], axis=-1)
    idx = jnp.argmax(noise.reshape(o, -1), axis=1)
    labels = (idx % 2).astype(jnp.int32)
    pix = idx // 2
    coords = jnp.stack([pix % w, pix // w], axis=-1).astype(jnp.float32)
    return coords[:, None], labels[:, None]


def mask_to_box(masks):
    """[O, H, W] bool -> [O, 4] int32 (x0, y0, x1, y1), inclusive; an empty mask gives
    (W, H, -1, -1) (official `sam2.utils.misc.mask_to_box`)."""
    masks = jnp.asarray(masks, bool)
    _, h, w = masks.shape
    xs = jnp.arange(w, dtype=jnp.int32)[None, None, :]
    ys = jnp.arange(h, dtype=jnp.int32)[None, :, None]
    x0 = jnp.where(masks, xs, w).min(axis=(1, 2))
    x1 = jnp.where(masks, xs, -1).max(axis=(1, 2))
    y0 = jnp.where(masks, ys, h).min(axis=(1, 2))
    y1 = jnp.where(masks, ys, -1).max(axis=(1, 2))
    return jnp.stack([x0, y0, x1, y1], axis=-1)


def sample_box_points(key, masks, noise: float = 0.1, noise_bound: float = 20.0):
    """A noisy ground-truth box per object as two corner points.

    Official counterpart: `sam2.modeling.sam2_utils.sample_box_points`: each corner moves by
    up to `noise` of the box side, at most `noise_bound` pixels, then is clamped to the image.
    masks [O, H, W] bool -> (coords [O, 2, 2] float32, labels [O, 2] int32 (2, 3)).
    """
    masks = jnp.asarray(masks, bool)
    o, h, w = masks.shape
    box = mask_to_box(masks).astype(jnp.float32)
    if noise > 0.0:
        max_dx = jnp.minimum((box[:, 2] - box[:, 0]) * noise, noise_bound)
        max_dy = jnp.minimum((box[:, 3] - box[:, 1]) * noise, noise_bound)
        u = 2.0 * jax.random.uniform(key, (o, 4)) - 1.0
        box = box + u * jnp.stack([max_dx, max_dy, max_dx, max_dy], axis=-1)
        hi = jnp.asarray([w - 1, h - 1, w - 1, h - 1], jnp.float32)
        box = jnp.clip(box, 0.0, hi)
    labels = jnp.broadcast_to(jnp.asarray([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], jnp.int32), (o, 2))
    return box.reshape(o, 2, 2), labels
