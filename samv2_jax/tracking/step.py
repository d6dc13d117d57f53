"""The tracking core: one frame's step as pure functions over (params, bank, features).

`track_step` runs the whole per-frame work for every object at once (objects on the leading
axis, one image encoding for all): pick memories with a policy, condition the frame's features
on them with memory attention, run the SAM heads, encode the predicted mask into a new memory,
and write it into the bank. It is jit-compiled once per static setting; the bank's fixed
shapes keep it from retracing as the video goes on.

The pieces (`frame_features`, `sam_heads`, `mask_as_output`, `condition_on_memory`,
`encode_memory`) are public for research code that wants to recombine them.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.image_encoder import forward_image
from samv2_jax.modeling.layers import conv2d, linear, mlp
from samv2_jax.modeling.mask_decoder import mask_decoder
from samv2_jax.modeling.mask_postprocess import fill_holes
from samv2_jax.modeling.memory_attention import memory_attention
from samv2_jax.tracking.bank import MemoryBank, MemorySelection, default_policy, streaming_slot, write
from samv2_jax.modeling.memory_encoder import encode_new_memory
from samv2_jax.modeling.position_encoding import sine_grid
from samv2_jax.modeling.prompt_encoder import dense_pe, prompt_encoder
from samv2_jax.modeling.transforms import resize_bilinear

NO_OBJ_SCORE = -1024.0  # mask logits of an object judged absent from the frame
Policy = Callable[..., MemorySelection]


def frame_features(params, cfg: SAM2Config, image):
    """image [1, S, S, 3] preprocessed -> the backbone outputs a tracking step needs:
    vision_feat / vision_pos [1, E, E, C] (stride 16) and high_res (stride 4, stride 8)."""
    out = forward_image(params, cfg, image)
    return {"vision_feat": out["backbone_fpn"][-1], "vision_pos": out["vision_pos_enc"][-1],
            "high_res": tuple(out["backbone_fpn"][:-1])}


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


def sam_heads(params, cfg: SAM2Config, pix_feat, high_res, points=None, mask_inputs=None,
              multimask: bool = False):
    """Prompt encoder + mask decoder on memory-conditioned features, for every object.

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
        multimask_output=multimask, high_res_features=high_res)
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


def mask_as_output(params, cfg: SAM2Config, vision_feat, high_res, masks):
    """A mask prompt taken as the frame's output without running SAM on it.

    masks [O, S, S] (0/1 at input resolution). The pointer still comes from the decoder,
    prompted by the downsampled mask; presence is decided by the mask itself.
    """
    o = masks.shape[0]
    masks = masks.astype(jnp.float32)
    high = masks * 20.0 - 10.0  # logits of +-10: sigmoid ~ 0/1
    low_size = masks.shape[-1] // 4
    low = resize_bilinear(high[..., None], (low_size, low_size), antialias=True)[..., 0]
    feat = jnp.broadcast_to(vision_feat, (o, *vision_feat.shape[1:]))
    small = conv2d(params["mask_downsample"], masks[..., None], stride=4)[..., 0]
    ptr = sam_heads(params, cfg, feat, high_res, mask_inputs=small)["obj_ptr"]
    present = jnp.any(masks.reshape(o, -1) > 0, axis=1, keepdims=True).astype(jnp.float32)
    obj = 20.0 * present - 10.0
    if cfg.decoder.pred_obj_scores:
        if cfg.memory.fixed_no_obj_ptr:
            ptr = present * ptr
        ptr = ptr + (1 - present) * params["no_obj_ptr"].reshape(1, -1)
    return {
        "low_res_multimasks": low[:, None], "ious": jnp.ones((o, 1), jnp.float32),
        "pred_masks": low[:, None], "pred_masks_high_res": high[:, None],
        "obj_ptr": ptr, "object_score_logits": obj,
    }


def _sine_1d(pos, dim: int, temperature: float = 10000.0):
    half = dim // 2
    k = np.arange(half, dtype=np.float32)
    freq = jnp.asarray(temperature ** (2 * (k // 2) / half), jnp.float32)
    x = pos[..., None] / freq
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)


def memory_pos_enc(cfg: SAM2Config):
    """[E*E, mem_dim]: the spatial position encoding of every memory (the same for all)."""
    e = cfg.embedding_size
    return jnp.asarray(sine_grid(e, e, cfg.memory.mem_dim)).reshape(e * e, -1)


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
    pos = (memory_pos_enc(cfg)[None, None] + tpos[:, :, None]).reshape(o, s * n, d)
    valid = jnp.repeat(sel.mem_valid, n, axis=1)

    p = sel.ptr_slots.shape[1]
    if p == 0:
        return feats, pos, valid, 0
    ptrs = jnp.take_along_axis(bank.obj_ptr, sel.ptr_slots[:, :, None], axis=1)
    c = ptrs.shape[-1]
    if m.add_tpos_enc_to_obj_ptrs:
        tpos_dim = c if m.proj_tpos_enc_in_obj_ptrs else d
        ptr_pos = _sine_1d(sel.ptr_dist / sel.ptr_scale, tpos_dim)
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
                        vision_feat, vision_pos):
    """Fuse the current frame's features with the selected memories: [O, E, E, C]."""
    o, e = bank.num_objects, cfg.embedding_size
    c = vision_feat.shape[-1]
    # One frame for all objects: memory_attention shares the work that does not see memory.
    curr = vision_feat.reshape(1, e * e, c)
    curr_pos = vision_pos.reshape(1, e * e, c)
    memory, memory_pos, valid, num_ptr = gather_memory(params, cfg, bank, sel)
    out = memory_attention(params["memory_attention"], cfg, curr, curr_pos, memory, memory_pos,
                           num_obj_ptr_tokens=num_ptr, feat_hw=(e, e), memory_valid=valid)
    return out.reshape(o, e, e, c)


def without_memory(params, cfg: SAM2Config, vision_feat, num_objects: int):
    """Features of a frame tracked from its prompts alone (the "no memory" embedding added)."""
    x = vision_feat + params["no_mem_embed"].reshape(-1)
    return jnp.broadcast_to(x, (num_objects, *x.shape[1:]))


def encode_memory(params, cfg: SAM2Config, vision_feat, high_res_masks, object_score_logits,
                  is_mask_from_pts, memory_dtype=jnp.bfloat16):
    """Masks at input resolution [O, S, S] -> memories [O, E, E, D], rounded to `memory_dtype`
    (the official predictor stores them in bfloat16)."""
    o = high_res_masks.shape[0]
    feat = jnp.broadcast_to(vision_feat, (o, *vision_feat.shape[1:]))
    maskmem, _ = encode_new_memory(params, cfg, feat, high_res_masks, object_score_logits,
                                   jnp.broadcast_to(is_mask_from_pts, (o,)))
    return maskmem.astype(memory_dtype)


def use_multimask(cfg: SAM2Config, init_cond: bool, num_points: int) -> bool:
    """Whether the SAM head returns three masks (and keeps the best) on this frame."""
    m = cfg.memory
    return bool(m.multimask_output_in_sam and (init_cond or m.multimask_output_for_tracking)
                and m.multimask_min_pt_num <= num_points <= m.multimask_max_pt_num)


def low_res_to_input(cfg: SAM2Config, pred_masks):
    """[O, 1, 4E, 4E] -> [O, S, S] bilinear, as the official re-encodes a prompted frame."""
    s = cfg.image_size
    return resize_bilinear(pred_masks[:, 0, :, :, None], (s, s))[..., 0]


@functools.partial(jax.jit, static_argnames=(
    "cfg", "init_cond", "multimask", "max_cond", "fill_hole_area", "policy"))
def decode_frame(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, *, reverse,
                 num_frames, init_cond: bool, multimask: bool, max_cond: int = 1,
                 points=None, mask_inputs=None, prev_mask_logits=None,
                 fill_hole_area: int = 0, policy: Policy = default_policy):
    """A frame's masks for every object in `bank`, without encoding a memory (the
    interactive path: prompts may still change).

    With `mask_inputs` [O, S, S] and the config's `use_mask_input_as_output_without_sam`,
    the mask is the output. Otherwise the features are conditioned on memory (unless
    `init_cond`: a first prompt for the object) and decoded with `points` and, as a dense
    prompt, `prev_mask_logits` [O, 4E, 4E] or `mask_inputs`. `pred_masks` in the result have
    holes filled when `fill_hole_area` > 0; `pred_masks_high_res` is the raw best mask the
    memory encoder would see.
    """
    o = bank.num_objects
    vision_feat, high_res = feats["vision_feat"], feats["high_res"]
    if mask_inputs is not None and cfg.memory.use_mask_input_as_output_without_sam:
        out = mask_as_output(params, cfg, vision_feat, high_res, mask_inputs)
    else:
        if init_cond:
            pix = without_memory(params, cfg, vision_feat, o)
        else:
            sel = policy(cfg, bank, frame_idx, reverse, num_frames, max_cond)
            pix = condition_on_memory(params, cfg, bank, sel, vision_feat, feats["vision_pos"])
        dense = prev_mask_logits if prev_mask_logits is not None else mask_inputs
        out = sam_heads(params, cfg, pix, high_res, points=points, mask_inputs=dense,
                        multimask=multimask)
    if fill_hole_area > 0:
        out["pred_masks"] = fill_holes(out["pred_masks"], fill_hole_area)
    return out


@functools.partial(jax.jit, static_argnames=("cfg", "memory_dtype"))
def encode_prompted_memory(params, cfg: SAM2Config, feats, pred_masks, object_score_logits,
                           memory_dtype=jnp.bfloat16):
    """The memory of a frame decoded from prompts: its (hole-filled) low-res masks brought
    back to input resolution, binarized as point-prompted masks are."""
    high = low_res_to_input(cfg, pred_masks)
    return encode_memory(params, cfg, feats["vision_feat"], high, object_score_logits, True,
                         memory_dtype)


def _track(params, cfg, bank, feats, frame_idx, slot, write_mask, reverse, num_frames,
           max_cond, fill_hole_area, memory_dtype, policy):
    o = bank.num_objects
    if slot is None:
        slot = streaming_slot(bank, frame_idx, False)
    multimask = use_multimask(cfg, False, 0)
    sel = policy(cfg, bank, frame_idx, reverse, num_frames, max_cond)
    pix = condition_on_memory(params, cfg, bank, sel, feats["vision_feat"], feats["vision_pos"])
    out = sam_heads(params, cfg, pix, feats["high_res"], multimask=multimask)
    maskmem = encode_memory(params, cfg, feats["vision_feat"], out["pred_masks_high_res"][:, 0],
                            out["object_score_logits"], jnp.zeros((o,), bool), memory_dtype)
    new_bank = write(bank, slot, maskmem, out["obj_ptr"], frame_idx, False,
                     out["object_score_logits"], where=write_mask)
    if fill_hole_area > 0:
        out["pred_masks"] = fill_holes(out["pred_masks"], fill_hole_area)
    out = {k: out[k] for k in ("pred_masks", "ious", "obj_ptr", "object_score_logits")}
    return out, new_bank


_STEP_STATIC = ("cfg", "max_cond", "fill_hole_area", "memory_dtype", "policy")


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_step(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, slot,
               write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
               fill_hole_area: int = 0, memory_dtype=jnp.bfloat16,
               policy: Policy = default_policy):
    """Track every object of `bank` into frame `frame_idx` from memory alone.

    feats: `frame_features` of the frame. slot [O]: where each object's new memory goes
    (None: the streaming ring's choice, `streaming_slot`; objects with `write_mask` false are computed but leave the bank untouched: e.g. a frame
    that is already prompted for them). Returns (outputs, new bank); outputs hold
    `pred_masks` [O, 1, 4E, 4E] (holes filled), `ious`, `obj_ptr`, `object_score_logits`.
    """
    return _track(params, cfg, bank, feats, frame_idx, slot, write_mask, reverse, num_frames,
                  max_cond, fill_hole_area, memory_dtype, policy)


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_image_step(params, cfg: SAM2Config, bank: MemoryBank, image, frame_idx, slot,
                     write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
                     fill_hole_area: int = 0, memory_dtype=jnp.bfloat16,
                     policy: Policy = default_policy):
    """`track_step` from a preprocessed image [1, S, S, 3]: encoding and tracking in one
    program."""
    feats = frame_features(params, cfg, image)
    return _track(params, cfg, bank, feats, frame_idx, slot, write_mask, reverse, num_frames,
                  max_cond, fill_hole_area, memory_dtype, policy)


encode_frame = jax.jit(frame_features, static_argnames=("cfg",))

# The predictors' in-place variants: the bank passed in is consumed (its buffers reused), which
# keeps a whole-video bank from being copied on every frame.
track_step_inplace = jax.jit(track_step.__wrapped__, static_argnames=_STEP_STATIC,
                             donate_argnames=("bank",))
track_image_step_inplace = jax.jit(track_image_step.__wrapped__, static_argnames=_STEP_STATIC,
                                   donate_argnames=("bank",))


def track_frames(params, cfg: SAM2Config, bank: MemoryBank, images, first_frame, *,
                 max_cond: int = 1, fill_hole_area: int = 0, memory_dtype=jnp.bfloat16,
                 num_frames=2**30, policy: Policy = default_policy, slot_fn=None):
    """Track forward through a stack of preprocessed frames [T, S, S, 3] with `lax.scan`
    (offline use, or training through time). Frame t gets index first_frame + t; memories go
    to `slot_fn(bank, frame_idx)` (default: the streaming ring). Returns (per-frame outputs
    stacked on a leading T axis, final bank). Not jitted here: wrap it in `jax.jit` with
    `cfg` and the keyword options static, or differentiate through it."""
    slot_fn = slot_fn or (lambda b, f: streaming_slot(b, f, False))

    def body(bank, xs):
        image, f = xs
        feats = frame_features(params, cfg, image[None])
        out, bank = _track(params, cfg, bank, feats, f, slot_fn(bank, f), None, False,
                           num_frames, max_cond, fill_hole_area, memory_dtype, policy)
        return bank, out

    idx = first_frame + jnp.arange(images.shape[0], dtype=jnp.int32)
    bank, outs = jax.lax.scan(body, bank, (images, idx))
    return outs, bank
