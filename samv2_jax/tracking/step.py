"""The tracking core: one frame's step as pure functions over (params, bank, features).

`track_step` runs the whole per-frame work for every object at once (objects on the leading
axis, one image encoding for all): pick memories with a policy, condition the frame's features
on them with memory attention, run the SAM heads, encode the predicted mask into a new memory,
and write it into the bank. It is jit-compiled once per static setting; the bank's fixed
shapes keep it from retracing as the video goes on.

Features (`feats`) are what `samv2_jax.modeling.image_encoder.encode_image` returns for one
frame: {"image_embed", "image_pos", "high_res_feats"}. The pieces (`sam_heads`,
`mask_as_output`, `gather_memory`, `condition_on_memory`, `decode_frame`) are public for
research code that wants to recombine them; every step returns its whole output dict.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.image_encoder import encode_image, no_memory_features
from samv2_jax.modeling.layers import conv2d, linear, mlp
from samv2_jax.modeling.mask_decoder import mask_decoder
from samv2_jax.modeling.mask_postprocess import fill_holes
from samv2_jax.modeling.memory_attention import memory_attention
from samv2_jax.modeling.memory_encoder import encode_memory
from samv2_jax.modeling.position_encoding import sine_1d, sine_grid
from samv2_jax.modeling.prompt_encoder import dense_pe, prompt_encoder
from samv2_jax.modeling.transforms import resize_bilinear
from samv2_jax.tracking.bank import MemoryBank, streaming_slot, write
from samv2_jax.tracking.policies import MemoryPolicy, MemorySelection, OfficialPolicy

# Mask logits of an object judged absent from the frame (official `NO_OBJ_SCORE`).
NO_OBJ_SCORE = -1024.0
# A mask given as the output is turned into logits of +-10 (sigmoid ~ 0/1), as the official.
_MASK_AS_OUTPUT_LOGIT = 10.0


def _obj_ptr_from_token(params, cfg: SAM2Config, token, object_score_logits):
    """Project the SAM output token to an object pointer; absent objects get the learned
    no-object pointer."""
    m = cfg.memory
    if m.use_mlp_for_obj_ptr_proj:
        ptr = mlp(params["obj_ptr_proj"], token, 3)
    else:
        ptr = linear(params["obj_ptr_proj"], token)
    if cfg.decoder.pred_obj_scores:
        if m.soft_no_obj_ptr:
            present = jax.nn.sigmoid(object_score_logits)
        else:
            present = (object_score_logits > 0).astype(ptr.dtype)
        if m.fixed_no_obj_ptr:
            ptr = present * ptr
        ptr = ptr + (1 - present) * params["no_obj_ptr"].reshape(1, -1)
    return ptr


def sam_heads(params, cfg: SAM2Config, pix_feat, high_res_feats, points=None,
              mask_inputs=None, multimask: bool = False):
    """Prompt encoder + mask decoder on (memory-conditioned) features, for every object.

    Official counterpart: `SAM2Base._forward_sam_heads`.
    pix_feat [O, E, E, C]; points (coords [O, N, 2] in input pixels, labels [O, N]) or None;
    mask_inputs [O, h, w] logits or None (resized to the decoder's mask size). Returns the
    best mask (by predicted IoU when `multimask`) at low and input resolution, all masks,
    IoUs, the object pointer and the object score logits.
    """
    o = pix_feat.shape[0]
    pe = params["sam_prompt_encoder"]
    if points is None:  # the decoder expects at least one (padding) point
        points = (jnp.zeros((o, 1, 2), jnp.float32), -jnp.ones((o, 1), jnp.int32))
    if mask_inputs is not None:
        size = cfg.low_res_mask_size
        mask_inputs = mask_inputs.astype(jnp.float32)
        if mask_inputs.shape[-2:] != (size, size):
            mask_inputs = resize_bilinear(mask_inputs[..., None], (size, size),
                                          antialias=True)[..., 0]
    sparse, dense = prompt_encoder(pe, cfg, points=points, boxes=None, masks=mask_inputs)
    masks, ious, tokens, obj = mask_decoder(
        params["sam_mask_decoder"], cfg.decoder, pix_feat, dense_pe(pe, cfg), sparse, dense,
        multimask_output=multimask, high_res_features=high_res_feats)
    if cfg.decoder.pred_obj_scores:
        # Memories get a hard present/absent decision, matching the visible mask.
        masks = jnp.where((obj > 0)[:, :, None, None], masks, NO_OBJ_SCORE)
    masks = masks.astype(jnp.float32)
    s = cfg.image_size
    high = resize_bilinear(masks.transpose(0, 2, 3, 1), (s, s)).transpose(0, 3, 1, 2)
    token = tokens[:, 0]
    if multimask:
        best = jnp.argmax(ious, axis=-1)
        low_best = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
        high_best = jnp.take_along_axis(high, best[:, None, None, None], axis=1)
        if tokens.shape[1] > 1:
            token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    else:
        low_best, high_best = masks, high
    return {
        "low_res_multimasks": masks, "ious": ious, "pred_masks": low_best,
        "pred_masks_high_res": high_best,
        "obj_ptr": _obj_ptr_from_token(params, cfg, token, obj),
        "object_score_logits": obj,
    }


def mask_as_output(params, cfg: SAM2Config, image_embed, high_res_feats, masks):
    """A mask prompt taken as the frame's output without running SAM on it.

    Official counterpart: `SAM2Base._use_mask_as_output`.
    masks [O, S, S] (0/1 at input resolution). The pointer still comes from the decoder,
    prompted by the downsampled mask; presence is decided by the mask itself.
    """
    o = masks.shape[0]
    masks = masks.astype(jnp.float32)
    v = _MASK_AS_OUTPUT_LOGIT
    high = masks * (2 * v) - v
    low_size = masks.shape[-1] // 4
    low = resize_bilinear(high[..., None], (low_size, low_size), antialias=True)[..., 0]
    # The official decodes the raw features here: no "no memory" embedding.
    feat = jnp.broadcast_to(image_embed, (o, *image_embed.shape[1:]))
    small = conv2d(params["mask_downsample"], masks[..., None], stride=4)[..., 0]
    ptr = sam_heads(params, cfg, feat, high_res_feats, mask_inputs=small)["obj_ptr"]
    present = jnp.any(masks.reshape(o, -1) > 0, axis=1, keepdims=True).astype(jnp.float32)
    obj = (2 * v) * present - v
    if cfg.decoder.pred_obj_scores:
        if cfg.memory.fixed_no_obj_ptr:
            ptr = present * ptr
        ptr = ptr + (1 - present) * params["no_obj_ptr"].reshape(1, -1)
    return {
        "low_res_multimasks": low[:, None], "ious": jnp.ones((o, 1), jnp.float32),
        "pred_masks": low[:, None], "pred_masks_high_res": high[:, None],
        "obj_ptr": ptr, "object_score_logits": obj,
    }


def gather_memory(params, cfg: SAM2Config, bank: MemoryBank, sel: MemorySelection):
    """The selected memories as attention tokens: (memory [O, M, D], pos [O, M, D],
    valid [O, M], number of pointer tokens at the end)."""
    m = cfg.memory
    o, e, d = bank.num_objects, cfg.embedding_size, m.mem_dim
    n = e * e
    s = sel.mem_slots.shape[1]
    feats = jnp.take_along_axis(bank.maskmem, sel.mem_slots[:, :, None, None, None], axis=1)
    feats = feats.astype(jnp.float32).reshape(o, s * n, d)
    tpos = jnp.asarray(params["maskmem_tpos_enc"]).reshape(m.num_maskmem, d)
    tpos = tpos[m.num_maskmem - sel.mem_tpos - 1]
    # Every memory map has the same spatial encoding: the sine grid of its shape.
    grid = jnp.asarray(sine_grid(e, e, d)).reshape(n, d)
    pos = (grid[None, None] + tpos[:, :, None]).reshape(o, s * n, d)
    valid = jnp.repeat(sel.mem_valid, n, axis=1)

    p = sel.ptr_slots.shape[1]
    if p == 0:
        return feats, pos, valid, 0
    ptrs = jnp.take_along_axis(bank.obj_ptr, sel.ptr_slots[:, :, None], axis=1)
    c = ptrs.shape[-1]
    if m.add_tpos_enc_to_obj_ptrs:
        tpos_dim = c if m.proj_tpos_enc_in_obj_ptrs else d
        ptr_pos = sine_1d(sel.ptr_dist / sel.ptr_scale, tpos_dim)
        if m.proj_tpos_enc_in_obj_ptrs:
            ptr_pos = linear(params["obj_ptr_tpos_proj"], ptr_pos)
    else:
        ptr_pos = jnp.zeros((o, p, d), jnp.float32)
    split = c // d if d < c else 1
    if d < c:  # a pointer becomes several memory-width tokens
        ptrs = ptrs.reshape(o, p * split, d)
        ptr_pos = jnp.repeat(ptr_pos, split, axis=1)
    ptr_valid = jnp.repeat(sel.ptr_valid, split, axis=1)
    return (jnp.concatenate([feats, ptrs], 1), jnp.concatenate([pos, ptr_pos], 1),
            jnp.concatenate([valid, ptr_valid], 1), p * split)


def condition_on_memory(params, cfg: SAM2Config, bank: MemoryBank, sel: MemorySelection,
                        image_embed, image_pos):
    """Fuse the current frame's features with the selected memories: [O, E, E, C].

    Official counterpart: `SAM2Base._prepare_memory_conditioned_features` (its memory branch;
    the no-memory branch is `no_memory_features`).
    """
    o, e = bank.num_objects, cfg.embedding_size
    c = image_embed.shape[-1]
    # One frame for all objects: memory_attention shares the work that does not see memory.
    curr = image_embed.reshape(1, e * e, c)
    curr_pos = image_pos.reshape(1, e * e, c)
    memory, memory_pos, valid, num_ptr = gather_memory(params, cfg, bank, sel)
    out = memory_attention(params["memory_attention"], cfg, curr, curr_pos, memory, memory_pos,
                           num_obj_ptr_tokens=num_ptr, feat_hw=(e, e), memory_valid=valid)
    return out.reshape(o, e, e, c)


def use_multimask(cfg: SAM2Config, init_cond: bool, num_points: int) -> bool:
    """Whether the SAM head returns three masks (and keeps the best) on this frame
    (official `SAM2Base._use_multimask`)."""
    m = cfg.memory
    return bool(m.multimask_output_in_sam and (init_cond or m.multimask_output_for_tracking)
                and m.multimask_min_pt_num <= num_points <= m.multimask_max_pt_num)


@functools.partial(jax.jit, static_argnames=(
    "cfg", "init_cond", "multimask", "max_cond", "fill_hole_area", "policy"))
def decode_frame(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, *, reverse,
                 num_frames, init_cond: bool, multimask: bool, max_cond: int = 1,
                 points=None, mask_inputs=None, prev_mask_logits=None,
                 fill_hole_area: int = 0, policy: MemoryPolicy = OfficialPolicy()):
    """A frame's masks for every object in `bank`, without encoding a memory (the
    interactive path: prompts may still change).

    Official counterpart: `SAM2Base.track_step(..., run_mem_encoder=False)` as the video
    predictor's `_run_single_frame_inference` calls it for prompts.
    With `mask_inputs` [O, S, S] and the config's `use_mask_input_as_output_without_sam`,
    the mask is the output. Otherwise the features are conditioned on memory (unless
    `init_cond`: a first prompt for the object) and decoded with `points` and, as a dense
    prompt, `prev_mask_logits` [O, 4E, 4E] or `mask_inputs`. `pred_masks` in the result have
    holes filled when `fill_hole_area` > 0; `pred_masks_high_res` is the raw best mask the
    memory encoder would see.
    """
    o = bank.num_objects
    image_embed, high_res = feats["image_embed"], feats["high_res_feats"]
    if mask_inputs is not None and cfg.memory.use_mask_input_as_output_without_sam:
        out = mask_as_output(params, cfg, image_embed, high_res, mask_inputs)
    else:
        if init_cond:
            pix = no_memory_features(params, cfg, image_embed)
            pix = jnp.broadcast_to(pix, (o, *pix.shape[1:]))
        else:
            sel = policy.select(cfg, bank, frame_idx, reverse=reverse, num_frames=num_frames,
                                max_cond=max_cond)
            pix = condition_on_memory(params, cfg, bank, sel, image_embed, feats["image_pos"])
        dense = prev_mask_logits if prev_mask_logits is not None else mask_inputs
        out = sam_heads(params, cfg, pix, high_res, points=points, mask_inputs=dense,
                        multimask=multimask)
    if fill_hole_area > 0:
        out["pred_masks"] = fill_holes(out["pred_masks"], fill_hole_area)
    return out


def _track(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, *, slot, write_mask,
           reverse, num_frames, max_cond: int, fill_hole_area: int, policy: MemoryPolicy):
    """Every object of `bank` into frame `frame_idx` from memory: (outputs, new bank)."""
    o = bank.num_objects
    if slot is None:
        slot = streaming_slot(bank, frame_idx)
    sel = policy.select(cfg, bank, frame_idx, reverse=reverse, num_frames=num_frames,
                        max_cond=max_cond)
    pix = condition_on_memory(params, cfg, bank, sel, feats["image_embed"], feats["image_pos"])
    out = sam_heads(params, cfg, pix, feats["high_res_feats"],
                    multimask=use_multimask(cfg, False, 0))
    mem = encode_memory(params, cfg, feats["image_embed"], out["pred_masks_high_res"][:, 0],
                        out["object_score_logits"], jnp.zeros((o,), bool))
    new_bank = write(bank, slot, mem["maskmem_features"], out["obj_ptr"], frame_idx, False,
                     out["object_score_logits"], where=write_mask)
    if fill_hole_area > 0:
        out["pred_masks"] = fill_holes(out["pred_masks"], fill_hole_area)
    return out, new_bank


_STEP_STATIC = ("cfg", "max_cond", "fill_hole_area", "policy")


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_step(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, slot=None,
               write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
               fill_hole_area: int = 0, policy: MemoryPolicy = OfficialPolicy()):
    """Track every object of `bank` into frame `frame_idx` from memory alone.

    Official counterpart: `SAM2Base.track_step` on a frame without prompts.
    feats: `encode_image` of the frame. slot [O]: where each object's new memory goes
    (None: the streaming ring's choice, `streaming_slot`); objects with `write_mask` false
    are computed but leave the bank untouched (e.g. a frame that is already prompted for
    them). The memory is stored in the bank's dtype. Returns (outputs, new bank); outputs
    are `sam_heads`' dict: `pred_masks` [O, 1, 4E, 4E] (holes filled), `pred_masks_high_res`
    (raw), `low_res_multimasks`, `ious`, `obj_ptr`, `object_score_logits`.
    """
    return _track(params, cfg, bank, feats, frame_idx, slot=slot, write_mask=write_mask,
                  reverse=reverse, num_frames=num_frames, max_cond=max_cond,
                  fill_hole_area=fill_hole_area, policy=policy)


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_image_step(params, cfg: SAM2Config, bank: MemoryBank, image, frame_idx, slot=None,
                     write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
                     fill_hole_area: int = 0, policy: MemoryPolicy = OfficialPolicy()):
    """`track_step` from a preprocessed image [1, S, S, 3]: encoding and tracking in one
    program."""
    feats = encode_image(params, cfg, image)
    return _track(params, cfg, bank, feats, frame_idx, slot=slot, write_mask=write_mask,
                  reverse=reverse, num_frames=num_frames, max_cond=max_cond,
                  fill_hole_area=fill_hole_area, policy=policy)


# The predictors' in-place variants: the bank passed in is consumed (its buffers reused), which
# keeps a whole-video bank from being copied on every frame.
track_step_inplace = jax.jit(track_step.__wrapped__, static_argnames=_STEP_STATIC,
                             donate_argnames=("bank",))
track_image_step_inplace = jax.jit(track_image_step.__wrapped__, static_argnames=_STEP_STATIC,
                                   donate_argnames=("bank",))


def track_frames(params, cfg: SAM2Config, bank: MemoryBank, images, first_frame, *,
                 max_cond: int = 1, fill_hole_area: int = 0, num_frames=2**30,
                 policy: MemoryPolicy = OfficialPolicy(), slot_fn=None):
    """Track forward through a stack of preprocessed frames [T, S, S, 3] with `lax.scan`
    (offline use, or training through time). Frame t gets index first_frame + t; memories go
    to `slot_fn(bank, frame_idx)` (default: the streaming ring). Returns (every output of
    `track_step`, stacked on a leading T axis; final bank). Not jitted here: wrap it in
    `jax.jit` with `cfg` and the keyword options static (outputs the caller drops are not
    computed), or differentiate through it."""
    slot_fn = slot_fn or (lambda b, f: streaming_slot(b, f))

    def body(bank, xs):
        image, f = xs
        feats = encode_image(params, cfg, image[None])
        out, bank = _track(params, cfg, bank, feats, f, slot=slot_fn(bank, f), write_mask=None,
                           reverse=False, num_frames=num_frames, max_cond=max_cond,
                           fill_hole_area=fill_hole_area, policy=policy)
        return bank, out

    idx = first_frame + jnp.arange(images.shape[0], dtype=jnp.int32)
    bank, outs = jax.lax.scan(body, bank, (images, idx))
    return outs, bank
