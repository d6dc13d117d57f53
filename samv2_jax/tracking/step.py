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
from samv2_jax.tracking.bank import MemoryBank, lead_rows, streaming_slot, write
from samv2_jax.tracking.policies import MemoryPolicy, MemorySelection, OfficialPolicy
from samv2_jax.tracking.policies.base import Candidates, MaskChoice, PolicyBase

# Mask logits of an object judged absent from the frame (official `NO_OBJ_SCORE`).
NO_OBJ_SCORE = -1024.0
# A mask given as the output is turned into logits of +-10 (sigmoid ~ 0/1), as the official.
_MASK_AS_OUTPUT_LOGIT = 10.0


def _obj_ptr_from_token(params, cfg: SAM2Config, token, object_score_logits,
                        presence_threshold: float = 0.0):
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
            present = (object_score_logits > presence_threshold).astype(ptr.dtype)
        if m.fixed_no_obj_ptr:
            ptr = present * ptr
        ptr = ptr + (1 - present) * params["no_obj_ptr"].reshape(1, -1)
    return ptr


def sam_candidates(params, cfg: SAM2Config, pix_feat, high_res_feats, points=None,
                   mask_inputs=None, multimask: bool = False,
                   presence_threshold: float = 0.0) -> Candidates:
    """Prompt encoder + mask decoder on (memory-conditioned) features, for every row, before
    a mask is chosen: every candidate mask at low and input resolution, their IoUs, the
    decoder's output tokens and the object score (see `sam_heads`). Objects whose score is
    not above `presence_threshold` get NO_OBJ_SCORE masks (the official threshold is 0)."""
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
        masks = jnp.where((obj > presence_threshold)[:, :, None, None], masks, NO_OBJ_SCORE)
    masks = masks.astype(jnp.float32)
    s = cfg.image_size
    high = resize_bilinear(masks.transpose(0, 2, 3, 1), (s, s)).transpose(0, 3, 1, 2)
    return Candidates(masks=masks, high_res=high, ious=ious, tokens=tokens, object_score=obj)


def pick_candidate(params, cfg: SAM2Config, cand: Candidates, choice: MaskChoice | None,
                   presence_threshold: float = 0.0) -> dict:
    """The chosen candidate of every row (choice None: the single mask of a single-mask
    decode) as `sam_heads`' output dict; with `choice.parent`, row r continues the
    candidate `choice.index[r]` of row `choice.parent[r]`."""
    masks, high, ious, tokens, obj = (cand.masks, cand.high_res, cand.ious, cand.tokens,
                                      cand.object_score)
    if choice is not None and choice.parent is not None:
        masks, high, ious, tokens, obj = (x[choice.parent] for x in (masks, high, ious, tokens,
                                                                      obj))
    token = tokens[:, 0]
    if choice is not None:
        best = choice.index
        low_best = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
        high_best = jnp.take_along_axis(high, best[:, None, None, None], axis=1)
        if tokens.shape[1] > 1:
            token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    else:
        low_best, high_best = masks, high
    return {
        "low_res_multimasks": masks, "ious": ious, "pred_masks": low_best,
        "pred_masks_high_res": high_best,
        "obj_ptr": _obj_ptr_from_token(params, cfg, token, obj, presence_threshold),
        "object_score_logits": obj,
    }


def sam_heads(params, cfg: SAM2Config, pix_feat, high_res_feats, points=None,
              mask_inputs=None, multimask: bool = False, presence_threshold: float = 0.0):
    """Prompt encoder + mask decoder on (memory-conditioned) features, for every object.

    Official counterpart: `SAM2Base._forward_sam_heads`.
    pix_feat [O, E, E, C]; points (coords [O, N, 2] in input pixels, labels [O, N]) or None;
    mask_inputs [O, h, w] logits or None (resized to the decoder's mask size). Returns the
    best mask (by predicted IoU when `multimask`) at low and input resolution, all masks,
    IoUs, the object pointer and the object score logits.
    """
    cand = sam_candidates(params, cfg, pix_feat, high_res_feats, points, mask_inputs,
                          multimask, presence_threshold)
    choice = MaskChoice(jnp.argmax(cand.ious, axis=-1)) if multimask else None
    return pick_candidate(params, cfg, cand, choice, presence_threshold)


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
    o, e, d = sel.mem_slots.shape[0], cfg.embedding_size, m.mem_dim
    n = e * e
    s = sel.mem_slots.shape[1]
    if sel.mem_rows is None:
        feats = jnp.take_along_axis(bank.maskmem, sel.mem_slots[:, :, None, None, None], axis=1)
    else:
        feats = bank.maskmem[sel.mem_rows, sel.mem_slots]
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
    if sel.ptr_rows is None:
        ptrs = jnp.take_along_axis(bank.obj_ptr, sel.ptr_slots[:, :, None], axis=1)
    else:
        ptrs = bank.obj_ptr[sel.ptr_rows, sel.ptr_slots]
    c = ptrs.shape[-1]
    if m.add_tpos_enc_to_obj_ptrs:
        tpos_dim = c if m.proj_tpos_enc_in_obj_ptrs else d
        scale = sel.ptr_scale if jnp.ndim(sel.ptr_scale) == 0 else sel.ptr_scale[:, None]
        ptr_pos = sine_1d(sel.ptr_dist / scale, tpos_dim)
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


def memory_key_scale(cfg: SAM2Config, sel: MemorySelection):
    """[O, M] per-token factors on the attention keys from the selection's per-memory
    weights, or None when it has none."""
    if sel.mem_weight is None and sel.ptr_weight is None:
        return None
    m = cfg.memory
    n = cfg.embedding_size ** 2
    o, s = sel.mem_slots.shape
    mem_w = jnp.ones((o, s)) if sel.mem_weight is None else sel.mem_weight
    parts = [jnp.repeat(mem_w.astype(jnp.float32), n, axis=1)]
    p = sel.ptr_slots.shape[1]
    if p:
        split = cfg.hidden_dim // m.mem_dim if m.mem_dim < cfg.hidden_dim else 1
        ptr_w = jnp.ones((o, p)) if sel.ptr_weight is None else sel.ptr_weight
        parts.append(jnp.repeat(ptr_w.astype(jnp.float32), split, axis=1))
    return jnp.concatenate(parts, 1)


def condition_on_memory(params, cfg: SAM2Config, bank: MemoryBank, sel: MemorySelection,
                        image_embed, image_pos, *, with_attention_mass: bool = False):
    """Fuse the current frame's features with the selected memories: [O, E, E, C].

    Official counterpart: `SAM2Base._prepare_memory_conditioned_features` (its memory branch;
    the no-memory branch is `no_memory_features`). With `with_attention_mass`, also the
    attention weight each memory token received in each layer ([layers, O, M]).
    """
    o, e = sel.mem_slots.shape[0], cfg.embedding_size
    c = image_embed.shape[-1]
    # One frame for all objects: memory_attention shares the work that does not see memory.
    curr = image_embed.reshape(1, e * e, c)
    curr_pos = image_pos.reshape(1, e * e, c)
    memory, memory_pos, valid, num_ptr = gather_memory(params, cfg, bank, sel)
    scale = memory_key_scale(cfg, sel)
    if scale is not None:
        # The keys are memory + pos; scaling them while the values stay `memory` is the
        # same as giving (scale * (memory + pos) - memory) as the position encoding.
        memory_pos = scale[..., None] * (memory + memory_pos) - memory
    if with_attention_mass:
        from samv2_jax.tracking.inspect import memory_attention_with_mass

        out, mass = memory_attention_with_mass(
            params["memory_attention"], cfg, curr, curr_pos, memory, memory_pos,
            num_obj_ptr_tokens=num_ptr, feat_hw=(e, e), memory_valid=valid)
        return out.reshape(o, e, e, c), mass
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
    full = bank
    bank = lead_rows(bank)  # prompts decode each object's best pathway
    o = bank.num_rows
    image_embed, high_res = feats["image_embed"], feats["high_res_feats"]
    if mask_inputs is not None and cfg.memory.use_mask_input_as_output_without_sam:
        out = mask_as_output(params, cfg, image_embed, high_res, mask_inputs)
    else:
        if init_cond:
            pix = no_memory_features(params, cfg, image_embed)
            pix = jnp.broadcast_to(pix, (o, *pix.shape[1:]))
        else:
            sel = policy.select(cfg, full, frame_idx, reverse=reverse, num_frames=num_frames,
                                max_cond=max_cond)
            if full.pathways > 1:
                sel = sel.rows(jnp.arange(o) * full.pathways)
            pix = condition_on_memory(params, cfg, full, sel, image_embed, feats["image_pos"])
        dense = prev_mask_logits if prev_mask_logits is not None else mask_inputs
        out = sam_heads(params, cfg, pix, high_res, points=points, mask_inputs=dense,
                        multimask=multimask,
                        presence_threshold=getattr(policy, "presence_threshold", 0.0))
    if fill_hole_area > 0:
        out["pred_masks"] = fill_holes(out["pred_masks"], fill_hole_area)
    return out


def _hook(policy, name: str):
    """A policy's method, or the official default for policies that only `select`."""
    fn = getattr(policy, name, None)
    return fn if fn is not None else functools.partial(getattr(PolicyBase, name), policy)


def _per_row(bank: MemoryBank, x, fill):
    """A per-object [O] argument (or None) as a per-row [R] array."""
    if x is None:
        return jnp.full((bank.num_rows,), fill)
    x = jnp.asarray(x)
    if bank.pathways > 1 and x.ndim and x.shape[0] == bank.num_rows:
        return x  # already per row
    x = jnp.broadcast_to(x, (bank.num_objects,))
    return jnp.repeat(x, bank.pathways) if bank.pathways > 1 else x


def _track(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, *, slot, write_mask,
           reverse, num_frames, max_cond: int, fill_hole_area: int, policy: MemoryPolicy,
           intermediates: bool = False):
    """Every object of `bank` into frame `frame_idx` from memory: (outputs, new bank)."""
    p = bank.pathways
    slot = streaming_slot(bank, frame_idx) if slot is None else _per_row(bank, slot, 0)
    write_mask = None if write_mask is None else _per_row(bank, write_mask, True)
    threshold = getattr(policy, "presence_threshold", 0.0)
    sel = policy.select(cfg, bank, frame_idx, reverse=reverse, num_frames=num_frames,
                        max_cond=max_cond)
    pix = condition_on_memory(params, cfg, bank, sel, feats["image_embed"], feats["image_pos"],
                              with_attention_mass=intermediates)
    if intermediates:
        pix, mass = pix
    multimask = use_multimask(cfg, False, 0)
    cand = sam_candidates(params, cfg, pix, feats["high_res_feats"], multimask=multimask,
                          presence_threshold=threshold)
    choice = None
    if multimask:
        choice, bank = _hook(policy, "choose_mask")(cfg, bank, cand, frame_idx, reverse=reverse)
    out = pick_candidate(params, cfg, cand, choice, threshold)
    shown = out["pred_masks"]
    if fill_hole_area > 0:
        shown = fill_holes(shown, fill_hole_area)
    chosen = jnp.zeros((bank.num_rows,), jnp.int32) if choice is None else choice.index
    iou = jnp.take_along_axis(out["ious"], chosen[:, None], axis=1)[:, 0]
    area = (shown > 0).sum((1, 2, 3)).astype(jnp.float32)
    written = jnp.ones((bank.num_rows,), bool) if write_mask is None else write_mask
    decision, bank = _hook(policy, "decide_write")(
        cfg, bank, cand, dict(out, pred_masks=shown, iou=iou, area=area), frame_idx, slot,
        written)
    masks_for_mem, from_prompt = out["pred_masks_high_res"][:, 0], jnp.zeros_like(written)
    is_cond = False
    if decision.as_prompt is not None:
        # A memory kept as a prompt is encoded the way the official encodes a frame the
        # user interacted with: from the (hole-filled) output mask, binarised.
        s = cfg.image_size
        up = resize_bilinear(shown[:, 0, :, :, None], (s, s))[..., 0]
        from_prompt = decision.as_prompt
        masks_for_mem = jnp.where(from_prompt[:, None, None], up, masks_for_mem)
        is_cond = from_prompt
        bank = _make_room_for_prompt(_hook(policy, "max_prompted")(), bank, decision)
    mem = encode_memory(params, cfg, feats["image_embed"], masks_for_mem,
                        out["object_score_logits"], from_prompt)
    new_bank = write(bank, decision.slot, mem["maskmem_features"], out["obj_ptr"], frame_idx,
                     is_cond, out["object_score_logits"], where=decision.write, iou=iou,
                     area=area)
    out["pred_masks"] = shown
    if intermediates:
        from samv2_jax.tracking.inspect import attended

        out["intermediates"] = attended(cfg, bank, sel, mass, decision)
    if p > 1:  # each object's output is its best pathway (row 0 of its rows)
        lead = jnp.arange(bank.num_objects) * p
        everything = out
        out = {k: v[lead] for k, v in everything.items() if k != "intermediates"}
        out["pathways"] = {k: v for k, v in everything.items() if k != "intermediates"}
        if intermediates:
            out["intermediates"] = everything["intermediates"]
    return out, new_bank


def _make_room_for_prompt(limit, bank: MemoryBank, decision) -> MemoryBank:
    """Rows that store a memory as a prompt and already hold the policy's maximum (`limit`)
    of prompted memories forget their oldest one (by prompt order)."""
    if limit is None:
        return bank
    prompted = bank.valid & bank.is_cond
    full = decision.as_prompt & decision.write & (prompted.sum(1) >= limit)
    big = jnp.iinfo(jnp.int32).max
    oldest = jnp.argmin(jnp.where(prompted, bank.cond_order, big), axis=1)
    drop = full[:, None] & (jnp.arange(bank.capacity)[None] == oldest[:, None])
    return bank.replace(valid=bank.valid & ~drop, is_cond=bank.is_cond & ~drop)


_STEP_STATIC = ("cfg", "max_cond", "fill_hole_area", "policy", "intermediates")


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_step(params, cfg: SAM2Config, bank: MemoryBank, feats, frame_idx, slot=None,
               write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
               fill_hole_area: int = 0, policy: MemoryPolicy = OfficialPolicy(),
               intermediates: bool = False):
    """Track every object of `bank` into frame `frame_idx` from memory alone.

    Official counterpart: `SAM2Base.track_step` on a frame without prompts.
    feats: `encode_image` of the frame. slot [O]: where each object's new memory goes
    (None: the streaming ring's choice, `streaming_slot`); objects with `write_mask` false
    are computed but leave the bank untouched (e.g. a frame that is already prompted for
    them). The memory is stored in the bank's dtype. Returns (outputs, new bank); outputs
    are `sam_heads`' dict: `pred_masks` [O, 1, 4E, 4E] (holes filled), `pred_masks_high_res`
    (raw), `low_res_multimasks`, `ious`, `obj_ptr`, `object_score_logits`; with a policy of
    several pathways per object, each object's best pathway, and every row under
    `pathways`; with `intermediates`, what each object attended to
    (`samv2_jax.tracking.inspect`).
    """
    return _track(params, cfg, bank, feats, frame_idx, slot=slot, write_mask=write_mask,
                  reverse=reverse, num_frames=num_frames, max_cond=max_cond,
                  fill_hole_area=fill_hole_area, policy=policy, intermediates=intermediates)


@functools.partial(jax.jit, static_argnames=_STEP_STATIC)
def track_image_step(params, cfg: SAM2Config, bank: MemoryBank, image, frame_idx, slot=None,
                     write_mask=None, *, reverse=False, num_frames=2**30, max_cond: int = 1,
                     fill_hole_area: int = 0, policy: MemoryPolicy = OfficialPolicy(),
                     intermediates: bool = False):
    """`track_step` from a preprocessed image [1, S, S, 3]: encoding and tracking in one
    program."""
    feats = encode_image(params, cfg, image)
    return _track(params, cfg, bank, feats, frame_idx, slot=slot, write_mask=write_mask,
                  reverse=reverse, num_frames=num_frames, max_cond=max_cond,
                  fill_hole_area=fill_hole_area, policy=policy, intermediates=intermediates)


# The predictors' in-place variants: the bank passed in is consumed (its buffers reused), which
# keeps a whole-video bank from being copied on every frame.
track_step_inplace = jax.jit(track_step.__wrapped__, static_argnames=_STEP_STATIC,
                             donate_argnames=("bank",))
track_image_step_inplace = jax.jit(track_image_step.__wrapped__, static_argnames=_STEP_STATIC,
                                   donate_argnames=("bank",))


def track_frames(params, cfg: SAM2Config, bank: MemoryBank, images, first_frame, *,
                 max_cond: int = 1, fill_hole_area: int = 0, num_frames=2**30,
                 policy: MemoryPolicy = OfficialPolicy(), slot_fn=None,
                 intermediates: bool = False):
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
                           fill_hole_area=fill_hole_area, policy=policy,
                           intermediates=intermediates)
        return bank, out

    idx = first_frame + jnp.arange(images.shape[0], dtype=jnp.int32)
    bank, outs = jax.lax.scan(body, bank, (images, idx))
    return outs, bank
