"""The training forward over a clip: official `training.model.sam2.SAM2Train.forward`.

Every frame of the clip is encoded at once; then `lax.scan` runs the frames in the official
processing order (initial conditioning frames first, then the others in time order),
carrying the memory bank (one slot per frame, float32 in float32 compute). On each frame:

- an initial conditioning frame with mask input takes the GT mask as its output
  (`mask_as_output`); with point input it is decoded from its click or box without memory;
- any other frame is conditioned on memory with the official policy in training mode
  (stride 1, prompted frames in the future allowed);
- a frame chosen for correction then gets `num_correction_pt_per_frame` more decoder steps,
  each with one more click sampled from the error of the previous step and the previous
  step's low-res logits as the mask prompt (`lax.scan` over a fixed buffer of points);
- its final mask is encoded into a memory; a corrected frame becomes a prompted one.

Objects are batched on one axis; videos of the batch run under `vmap` with one plan (the
official draws its prompt choices once per batch). The randomness comes from `key` alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.hiera import hiera
from samv2_jax.modeling.image_encoder import features_from_stages, no_memory_features
from samv2_jax.modeling.layers import conv2d
from samv2_jax.modeling.memory_attention import memory_attention
from samv2_jax.modeling.memory_encoder import encode_memory
from samv2_jax.modeling.transforms import resize_bilinear
from samv2_jax.tracking.bank import empty_bank, write
from samv2_jax.tracking.policies import OfficialPolicy
from samv2_jax.tracking.step import gather_memory
from samv2_jax.train import groups
from samv2_jax.train.config import TrainConfig, training_model_config
from samv2_jax.train.heads import buffered_sam_heads
from samv2_jax.train.prompts import (
    PROMPT_BOX,
    PROMPT_CLICK,
    PROMPT_MASK,
    ClipPlan,
    sample_box_points,
    sample_plan,
    sample_points_from_errors,
)

# Logits of a mask prompt taken as the output (official `_use_mask_as_output`: 20 m - 10).
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0


def _remat_policy(train_cfg: TrainConfig, part: str, default=None):
    if part not in train_cfg.remat:
        return default
    return getattr(jax.checkpoint_policies, train_cfg.remat_policy)


# Scan bodies that hold a lax.cond are always checkpointed: differentiating a cond inside a
# scan otherwise keeps a copy of every weight the cond reads for each iteration (they become
# per-iteration residuals; 8.6 GB instead of 3 GB for an 8-frame clip at 256). Keeping the
# matmul outputs keeps the backward pass almost free of recomputation.
_SCAN_BODY_POLICY = jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def check_batch(model_cfg: SAM2Config, batch) -> tuple[int, int, int]:
    """(B, T, O) of a training batch, or a ValueError that says what is wrong."""
    for k in ("images", "masks", "obj_valid"):
        if k not in batch:
            raise ValueError(f"the batch has no {k!r}; a training batch is a dict with "
                             "'images' [B, T, S, S, 3], 'masks' [B, T, O, S, S] and "
                             "'obj_valid' [B, O]")
    s = model_cfg.image_size
    img, masks, valid = batch["images"], batch["masks"], batch["obj_valid"]
    if img.ndim != 5 or img.shape[2:] != (s, s, 3):
        raise ValueError(f"batch['images'] must be [B, T, {s}, {s}, 3] (normalised frames at "
                         f"the model's image_size), got {tuple(img.shape)}")
    b, t = img.shape[:2]
    if masks.ndim != 5 or masks.shape[:2] != (b, t) or masks.shape[3:] != (s, s):
        raise ValueError(f"batch['masks'] must be [B={b}, T={t}, O, {s}, {s}], got "
                         f"{tuple(masks.shape)}")
    o = masks.shape[2]
    if valid.shape != (b, o):
        raise ValueError(f"batch['obj_valid'] must be [B={b}, O={o}], got {tuple(valid.shape)}")
    return b, t, o


def prepare_params(params, train_cfg: TrainConfig):
    """Frozen parameters behind stop_gradient, then cast to the compute dtype."""
    params = groups.freeze(params, train_cfg.frozen_patterns, train_cfg.train_only)
    if train_cfg.compute_dtype != "float32":
        params = groups.cast_floating(params, train_cfg.compute_dtype)
    return params


def encode_frames(params, cfg: SAM2Config, train_cfg: TrainConfig, images, key=None):
    """Image features of a stack of frames [N, S, S, 3] (official `forward_image`, with
    the trunk's stochastic depth when `key` is given)."""
    enc = params["image_encoder"]
    images = images.astype(enc["trunk"]["patch_embed"]["proj"]["weight"].dtype)
    stages = hiera(enc["trunk"], cfg.trunk, images, drop_path_rate=train_cfg.drop_path_rate,
                   key=key, remat_policy=_remat_policy(train_cfg, "hiera_blocks"))
    feats = features_from_stages(params, cfg, stages)
    return dict(feats, image_pos=feats["image_pos"][:1])  # the same for every frame


def _condition_on_memory(params, cfg, train_cfg, bank, frame_idx, num_frames, max_cond,
                         image_embed, image_pos, key):
    """`samv2_jax.tracking.step.condition_on_memory` with the training hooks (dropout, remat)."""
    o, e = bank.num_objects, cfg.embedding_size
    c = image_embed.shape[-1]
    sel = OfficialPolicy().select(cfg, bank, frame_idx, reverse=False, num_frames=num_frames,
                                  max_cond=max_cond)
    memory, memory_pos, valid, num_ptr = gather_memory(params, cfg, bank, sel)
    dt = image_embed.dtype
    out = memory_attention(
        params["memory_attention"], cfg, image_embed.reshape(1, e * e, c),
        image_pos.reshape(1, e * e, c).astype(dt), memory.astype(dt), memory_pos.astype(dt),
        num_obj_ptr_tokens=num_ptr, feat_hw=(e, e), memory_valid=valid,
        dropout_rate=train_cfg.memory_attention_dropout, key=key,
        remat_policy=_remat_policy(train_cfg, "memory_attention_layers"))
    return out.reshape(o, e, e, c)


def _step_record(out):
    """What a decoder step leaves for the loss and the caller."""
    return {k: out[k] for k in ("low_res_multimasks", "ious", "object_score_logits",
                                "multimask")}


def _initial_prompt(gt, kind, is_init, key, num_slots: int):
    """The point buffer of a frame before corrections: a click or box on an initial
    conditioning frame with point input, nothing otherwise."""
    o = gt.shape[0]
    k_click, k_box = jax.random.split(key)
    click_xy, click_lab = sample_points_from_errors(k_click, gt, None)
    box_xy, box_lab = sample_box_points(k_box, gt)
    is_box = kind == PROMPT_BOX
    xy0 = jnp.where(is_box, box_xy, jnp.concatenate([click_xy, jnp.zeros_like(click_xy)], 1))
    lab0 = jnp.where(is_box, box_lab, jnp.concatenate([click_lab, -jnp.ones_like(click_lab)], 1))
    coords = jnp.zeros((o, num_slots, 2), jnp.float32).at[:, :2].set(xy0)
    labels = -jnp.ones((o, num_slots), jnp.int32).at[:, :2].set(lab0)
    valid = jnp.zeros((num_slots,), bool)
    valid = valid.at[0].set(is_init & ((kind == PROMPT_CLICK) | is_box))
    valid = valid.at[1].set(is_init & is_box)
    return coords, labels, valid


def _mask_as_output(params, cfg: SAM2Config, gt, out):
    """A GT mask prompt taken as the frame's output, as `samv2_jax.tracking.step.
    mask_as_output` makes it (official `_use_mask_as_output`); `out` is the decoder's
    answer to the downsampled mask, of which only the object pointer is kept."""
    k = out["low_res_multimasks"].shape[1]
    m = gt.astype(jnp.float32)
    high = m * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
    low_size = cfg.low_res_mask_size
    low = resize_bilinear(high[..., None], (low_size, low_size), antialias=True)[..., 0]
    present = jnp.any(m.reshape(m.shape[0], -1) > 0, axis=1, keepdims=True).astype(jnp.float32)
    ptr = out["obj_ptr"]
    if cfg.decoder.pred_obj_scores:
        if cfg.memory.fixed_no_obj_ptr:
            ptr = present.astype(ptr.dtype) * ptr
        ptr = ptr + (1 - present).astype(ptr.dtype) * params["no_obj_ptr"].reshape(1, -1).astype(
            ptr.dtype)
    return {
        "low_res_multimasks": jnp.repeat(low[:, None], k, axis=1),
        "ious": jnp.ones(out["ious"].shape, jnp.float32), "multimask": jnp.asarray(False),
        "pred_masks": low[:, None], "pred_masks_high_res": high[:, None], "obj_ptr": ptr,
        "object_score_logits": MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS,
    }


def _track_clip(params, cfg: SAM2Config, train_cfg: TrainConfig, plan: ClipPlan, feats, masks,
                noise_key, dropout_key):
    """One video: feats of its T frames (leading axis T), masks [T, O, S, S] bool."""
    t, o = masks.shape[:2]
    n_corr = train_cfg.num_correction_pt_per_frame
    num_slots = 2 + n_corr  # a box's two corners, then one slot per correction click
    cond_frames = train_cfg.num_init_cond_frames_for_train
    if train_cfg.add_all_frames_to_correct_as_cond and train_cfg.prob_to_use_pt_input_for_train:
        cond_frames = max(cond_frames, train_cfg.num_frames_to_correct_for_train)
    max_cond = max(1, min(t, cond_frames))
    use_dropout = train_cfg.memory_attention_dropout > 0 and dropout_key is not None
    mem_dtype = feats["image_embed"].dtype
    step_policy = _remat_policy(train_cfg, "decoder_steps", _SCAN_BODY_POLICY)

    def frame_step(bank, f):
        gt = masks[f]
        image_embed = feats["image_embed"][f][None]
        high_res = tuple(h[f][None] for h in feats["high_res_feats"])  # broadcast over O
        is_init, is_corr = plan.is_init_cond[f], plan.is_corrected[f]
        kind = plan.init_prompt[f]
        k_prompt, k_corr = jax.random.split(jax.random.fold_in(noise_key, f))
        k_drop = jax.random.fold_in(dropout_key, f) if use_dropout else None
        coords, labels, valid = _initial_prompt(gt, kind, is_init, k_prompt, num_slots)
        use_mask = is_init & (kind == PROMPT_MASK)

        def without_memory():
            # A mask taken as output gets its pointer from the raw features; a prompted
            # frame is decoded with the "no memory" embedding added.
            pix = jnp.where(use_mask, image_embed, no_memory_features(params, cfg, image_embed))
            return jnp.broadcast_to(pix, (o, *pix.shape[1:]))

        def with_memory():
            return _condition_on_memory(params, cfg, train_cfg, bank, f, t, max_cond,
                                        image_embed, feats["image_pos"], k_drop)

        pix = jax.lax.cond(is_init, without_memory, with_memory)
        # The mask prompt of a mask taken as output: the GT mask downsampled by a conv.
        gt_small = conv2d(params["mask_downsample"], gt.astype(pix.dtype)[..., None],
                          stride=4)[..., 0]

        # Decoder steps: step 0 is the frame's first prediction; step j > 0 adds the j-th
        # correction click (sampled from the error of the best mask so far, or now and then
        # from the ground truth alone) with the previous low-res logits as the mask prompt.
        def decode(xy, lab, ok, mask_prompt, first_step):
            out = buffered_sam_heads(params, cfg, pix, high_res, xy, lab, ok,
                                     is_init_cond=is_init, mask_prompt=mask_prompt,
                                     use_mask_prompt=~first_step | use_mask,
                                     single_mask=first_step & use_mask)
            return jax.lax.cond(first_step & use_mask,
                                lambda: _mask_as_output(params, cfg, gt, out), lambda: out)

        def run_step(state, j):
            xy, lab, ok, prev = state
            first = j == 0
            pred = (prev["pred_masks_high_res"][:, 0] > 0) & ~plan.sample_from_gt[
                f, jnp.maximum(j - 1, 0)]
            new_xy, new_lab = sample_points_from_errors(jax.random.fold_in(k_corr, j), gt, pred)
            slot = 1 + j  # step j >= 1 writes slot 2 + (j - 1)
            xy = jnp.where(first, xy, xy.at[:, slot].set(new_xy[:, 0]))
            lab = jnp.where(first, lab, lab.at[:, slot].set(new_lab[:, 0]))
            ok = jnp.where(first, ok, ok.at[slot].set(True))
            mask_prompt = jnp.where(first, gt_small, prev["pred_masks"][:, 0])
            out = decode(xy, lab, ok, mask_prompt, first)
            return (xy, lab, ok, out), _step_record(out)

        @functools.partial(jax.checkpoint, policy=step_policy)
        def step(state, j):
            # Steps past the first run only on frames chosen for correction.
            return jax.lax.cond((j == 0) | is_corr, run_step, _skip_step, state, j)

        init = (coords, labels, valid, _blank_output(params, cfg, o, mem_dtype))
        (coords, labels, valid, last), steps = jax.lax.scan(step, init,
                                                            jnp.arange(1 + n_corr))
        mem = encode_memory(params, cfg, image_embed, last["pred_masks_high_res"][:, 0],
                            last["object_score_logits"], jnp.zeros((o,), bool))
        becomes_cond = is_init | (train_cfg.add_all_frames_to_correct_as_cond & is_corr)
        bank = write(bank, f, mem["maskmem_features"], last["obj_ptr"], f, becomes_cond,
                     last["object_score_logits"])
        step_valid = jnp.concatenate([jnp.ones((1,), bool), jnp.broadcast_to(is_corr, (n_corr,))])
        record = dict(steps, step_valid=step_valid, mask_as_output=use_mask,
                      pred_masks=last["pred_masks"], obj_ptr=last["obj_ptr"],
                      point_coords=coords, point_labels=labels, point_valid=valid)
        return bank, record

    frame_step = jax.checkpoint(frame_step,
                                policy=_remat_policy(train_cfg, "frame_step", _SCAN_BODY_POLICY))
    bank = empty_bank(cfg, o, t, memory_dtype=mem_dtype)
    bank = bank.replace(obj_ptr=bank.obj_ptr.astype(mem_dtype))
    _, records = jax.lax.scan(frame_step, bank, plan.order)
    # Back from processing order to frame order.
    inverse = jnp.argsort(plan.order)
    return jax.tree.map(lambda x: x[inverse], records)


def _blank_output(params, cfg: SAM2Config, o: int, dtype):
    """A decoder output of the right shapes, all zeros (the scan's initial state)."""
    h = cfg.low_res_mask_size
    s = cfg.image_size
    k = cfg.decoder.num_multimask_outputs
    return {
        "low_res_multimasks": jnp.zeros((o, k, h, h), jnp.float32),
        "ious": jnp.zeros((o, k), jnp.float32), "multimask": jnp.asarray(False),
        "pred_masks": jnp.zeros((o, 1, h, h), jnp.float32),
        "pred_masks_high_res": jnp.zeros((o, 1, s, s), jnp.float32),
        "obj_ptr": jnp.zeros((o, cfg.hidden_dim), dtype),
        "object_score_logits": jnp.zeros((o, 1), jnp.float32),
    }


def _skip_step(state, j):
    del j
    return state, jax.tree.map(jnp.zeros_like, _step_record(state[3]))


def _encode_in_groups(p, cfg: SAM2Config, train_cfg: TrainConfig, images, key):
    """encode_frames over [N, S, S, 3], `train_cfg.encoder_frames_per_call` frames at a time."""
    n, k = images.shape[0], train_cfg.encoder_frames_per_call
    if k is None or k >= n:
        return encode_frames(p, cfg, train_cfg, images, key)
    if n % k:
        raise ValueError(f"encoder_frames_per_call={k} does not divide the batch's {n} frames "
                         "(batch size x clip length); choose a divisor, or None")
    groups = images.reshape(n // k, k, *images.shape[1:])
    keys = None if key is None else jax.random.split(key, n // k)
    feats = jax.lax.map(lambda a: encode_frames(p, cfg, train_cfg, a[0], a[1]),
                        (groups, keys))
    image_pos = feats.pop("image_pos")[0]
    feats = jax.tree.map(lambda x: x.reshape(n, *x.shape[2:]), feats)
    return dict(feats, image_pos=image_pos)


def _forward(params, model_cfg: SAM2Config, train_cfg: TrainConfig, batch, key, plan=None):
    """The forward without the input-resolution logits (what the loss consumes)."""
    b, t, o = check_batch(model_cfg, batch)
    cfg = training_model_config(model_cfg)
    k_plan, k_noise, k_drop_path, k_dropout = jax.random.split(key, 4)
    if plan is None:
        plan = sample_plan(train_cfg, k_plan, t)
    elif plan.num_frames != t:
        raise ValueError(f"the plan is for {plan.num_frames} frames, the clip has {t}")
    p = prepare_params(params, train_cfg)
    s = model_cfg.image_size
    images = jnp.asarray(batch["images"]).reshape(b * t, s, s, 3)
    use_drop_path = train_cfg.drop_path_rate > 0
    feats = _encode_in_groups(p, cfg, train_cfg, images,
                              k_drop_path if use_drop_path else None)
    image_pos = feats.pop("image_pos")  # the same for every frame
    feats = jax.tree.map(lambda x: x.reshape(b, t, *x.shape[1:]), feats)
    masks = jnp.asarray(batch["masks"], bool)
    noise_keys = jax.random.split(k_noise, b)
    drop_keys = jax.random.split(k_dropout, b)

    def one_video(fv, mv, kn, kd):
        fv = dict(fv, image_pos=image_pos)
        kd = kd if train_cfg.memory_attention_dropout > 0 else None
        return _track_clip(p, cfg, train_cfg, plan, fv, mv, kn, kd)

    out = jax.vmap(one_video)(feats, masks, noise_keys, drop_keys)
    out["plan"] = plan
    return out


def high_res_logits(cfg: SAM2Config, low_res_multimasks, gt_masks, mask_as_output):
    """Decoder logits at the input resolution, as the loss sees them: the low-res logits
    upsampled bilinearly, or, for a mask taken as output, the GT mask as 20 m - 10.

    low_res_multimasks [..., O, M, h, w]; gt_masks [..., O, S, S] broadcastable against it
    without the M axis; mask_as_output: bool broadcastable to the leading axes.
    """
    s = cfg.image_size
    lead = low_res_multimasks.shape[:-2]
    x = low_res_multimasks.reshape(-1, *low_res_multimasks.shape[-2:])[..., None]
    up = resize_bilinear(x, (s, s))[..., 0].reshape(*lead, s, s)
    given = (jnp.asarray(gt_masks, jnp.float32) * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS)
    given = jnp.broadcast_to(given[..., None, :, :], up.shape)
    flag = jnp.asarray(mask_as_output).reshape(
        jnp.shape(mask_as_output) + (1,) * (up.ndim - jnp.ndim(mask_as_output)))
    return jnp.where(flag, given, up)


@functools.partial(jax.jit, static_argnames=("model_cfg", "train_cfg"))
def _forward_clip_jit(params, model_cfg, train_cfg, batch, key, plan):
    out = _forward(params, model_cfg, train_cfg, batch, key, plan)
    masks = jnp.asarray(batch["masks"], bool)
    # [B, T, K, O, M, S, S]: the GT of frame t for every step k.
    out["multimask_logits"] = high_res_logits(
        model_cfg, out["low_res_multimasks"], masks[:, :, None],
        out["mask_as_output"][:, :, None, None])
    return out


def forward_clip(params, model_cfg: SAM2Config, train_cfg: TrainConfig, batch, key, *,
                 plan: ClipPlan | None = None):
    """Official `SAM2Train.forward` (training mode) on a batch of clips.

    batch: {"images": [B, T, S, S, 3] float32 normalised, "masks": [B, T, O, S, S] bool,
    "obj_valid": [B, O] bool} (objects padded to a fixed O). key: every random choice
    (prompts, clicks, box noise, dropout, stochastic depth) comes from it; `plan`
    (`samv2_jax.train.prompts.sample_plan`) fixes the prompt choices instead.

    Returns a dict, every array with leading [B, T] (frame order), K = 1 +
    num_correction_pt_per_frame decoder steps per frame, M = 3 mask slots:
      multimask_logits [B, T, K, O, M, S, S]  logits at the input resolution (what the loss
                                              sees); a one-mask step repeats its mask
      low_res_multimasks [B, T, K, O, M, 4E, 4E], ious [B, T, K, O, M],
      object_score_logits [B, T, K, O, 1], multimask [B, T, K] (three masks or one),
      step_valid [B, T, K] (the step ran: step 0 always, the others on corrected frames),
      mask_as_output [B, T], pred_masks [B, T, O, 1, 4E, 4E] (final), obj_ptr [B, T, O, C],
      point_coords [B, T, O, P, 2], point_labels [B, T, O, P], point_valid [B, T, P] (the
      prompt after the last step: slots 0-1 the initial click or box, slot 2 + j the j-th
      correction click), and "plan" (the ClipPlan used).
    Jit-compiled once per shape and config. The loss (`loss_fn`) does not materialise
    `multimask_logits`; it upsamples frame by frame.
    """
    return _forward_clip_jit(params, model_cfg, train_cfg, batch, key, plan)
