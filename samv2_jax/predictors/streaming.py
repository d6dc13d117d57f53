"""A streaming tracker for sources without an end: frames arrive one at a time, prompts and
objects may be added on any frame, masks come out per frame, and memory stays flat.

The bank has a fixed number of slots per object: `max_prompt_frames` for prompted frames plus
a ring of recent frames (enough for the spatial memories and the object pointers the default
policy reads). Nothing else is kept between frames, so a stream of any length runs in the same
memory. `bank` is a public attribute: read it, edit it, or replace it between frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from samv2_jax.config import SAM2Config
from samv2_jax.predictors.inputs import Prompt, as_points, mask_prompt_to_input, with_box
from samv2_jax.predictors.programs import (
    decode_frame,
    encode_image,
    encode_memory,
    to_video_res,
    track_image_step_inplace,
    track_step_inplace,
)
from samv2_jax.tracking.bank import (
    MemoryBank,
    append_objects,
    demote_prompted,
    empty_bank,
    streaming_slot,
    take_objects,
    write_object,
)
from samv2_jax.tracking.policies import MemoryPolicy, OfficialPolicy, as_policy
from samv2_jax.tracking.step import NO_OBJ_SCORE, use_multimask
from samv2_jax.weights.store import Model

_UNBOUNDED = 2**30


class FrameResult(NamedTuple):
    frame_idx: int
    obj_ids: list
    masks: np.ndarray          # [O, 1, H, W] logits at the frame's resolution
    object_scores: np.ndarray  # [O] object score logits (> 0: the object is visible)


class StreamingTracker:
    """Track objects through frames pushed one at a time (`track(frame, prompts)`).

    Defaults match `SAM2VideoPredictor`; `num_frames` may give a known stream length (the
    object-pointer encoding depends on it for videos shorter than 16 frames).
    """

    def __init__(self, model: Model, max_prompt_frames: int = 4, fill_hole_area: int = 8,
                 non_overlap_masks: bool = False, binarize_mask_from_pts_for_mem_enc: bool = True,
                 memory_dtype: str = "bfloat16", num_frames: int | None = None,
                 policy: MemoryPolicy | str = OfficialPolicy()):
        cfg = model.config
        mem = dataclasses.replace(
            cfg.memory, binarize_mask_from_pts_for_mem_enc=binarize_mask_from_pts_for_mem_enc)
        self.cfg: SAM2Config = cfg.replace(memory=mem)
        self.params = model.params
        if max_prompt_frames < 1:
            raise ValueError(f"max_prompt_frames must be >= 1, got {max_prompt_frames}")
        policy = as_policy(policy)
        self.max_prompt_frames = int(max_prompt_frames)
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = bool(non_overlap_masks)
        self.memory_dtype = jnp.dtype(memory_dtype)
        self.num_frames = _UNBOUNDED if num_frames is None else int(num_frames)
        self.policy = policy
        m = self.cfg.memory
        recent = max((m.num_maskmem - 2) * m.memory_temporal_stride_for_eval + 1,
                     m.max_obj_ptrs_in_encoder - 1 if m.use_obj_ptrs_in_encoder else 0)
        if hasattr(policy, "recent_frames"):  # the frames this memory policy looks back at
            recent = max(recent, policy.recent_frames(self.cfg))
        self.capacity = self.max_prompt_frames + recent
        self.reset()

    def reset(self):
        """Forget every object and memory; the next frame gets index 0."""
        self.obj_ids: list = []
        self.bank: MemoryBank | None = None
        self.frame_idx = 0
        self._prompted: list[list[int]] = []  # per object: its prompted frames, oldest first

    def remove_object(self, obj_id):
        if obj_id not in self.obj_ids:
            raise KeyError(f"unknown object id {obj_id!r}; known ids: {self.obj_ids}")
        i = self.obj_ids.index(obj_id)
        keep = [j for j in range(len(self.obj_ids)) if j != i]
        self.obj_ids.pop(i)
        self._prompted.pop(i)
        self.bank = take_objects(self.bank, keep) if self.obj_ids else None

    def _add_object(self, obj_id):
        self.bank = append_objects(self.bank,
                                   empty_bank(self.cfg, 1, self.capacity, self.memory_dtype,
                                              policy=self.policy))
        self.obj_ids.append(obj_id)
        self._prompted.append([])

    def track(self, frame, prompts: Mapping[Any, Prompt] | None = None, *,
              image=None) -> FrameResult:
        """Process the next frame (HWC uint8 RGB, or anything `preprocess_frame` accepts)
        with optional prompts {obj_id: Prompt}; new ids start new objects.

        `image` may give the frame already preprocessed ([S, S, 3] float32, as
        `preprocess_frame` makes it), so a reader thread can do that work ahead of time.
        """
        prompts = dict(prompts or {})
        rgb = np.asarray(frame)
        if rgb.ndim != 3 or rgb.shape[-1] not in (1, 3, 4):
            raise ValueError(f"a frame must be an HWC image array, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        f = self.frame_idx
        self.policy = self.policy.for_video((h, w))  # policies that decide at video size
        image = self._model_input(rgb, image)
        # Frames with prompts need the features twice (prompt decoding and tracking);
        # the others encode and track in one program.
        feats = encode_image(self.params, self.cfg, image) if prompts else None
        for obj_id in prompts:
            if obj_id not in self.obj_ids:
                self._add_object(obj_id)
        if not self.obj_ids:
            self.frame_idx += 1
            return FrameResult(f, [], np.zeros((0, 1, h, w), np.float32), np.zeros((0,)))
        prompted = np.array([oid in prompts for oid in self.obj_ids])
        pred, scores = self._from_memory(f, image, feats, prompted)
        for i, obj_id in enumerate(self.obj_ids):
            if prompted[i]:
                pred[i], scores[i] = self._prompted_frame(i, prompts[obj_id], feats, f, (h, w))
            elif pred[i] is None:  # an object with no prompt yet
                low = self.cfg.low_res_mask_size
                pred[i] = jnp.full((1, 1, low, low), NO_OBJ_SCORE)
                scores[i] = jnp.full((1, 1), NO_OBJ_SCORE)
        self.frame_idx += 1
        masks = to_video_res(jnp.concatenate(pred), (h, w), self.non_overlap_masks)
        return FrameResult(f, list(self.obj_ids), np.asarray(masks),
                           np.asarray(jnp.concatenate(scores)).reshape(-1))

    def _model_input(self, rgb, image):
        """The frame as the model's input [1, S, S, 3] (preprocessed here unless given)."""
        s = self.cfg.image_size
        if image is None:
            from samv2_jax.io.frames import preprocess_frame  # PIL only when needed

            image = preprocess_frame(rgb, s)
        if np.shape(image) != (s, s, 3):
            raise ValueError(f"a preprocessed image must be [{s}, {s}, 3], got {np.shape(image)}")
        return jnp.asarray(image)[None]

    def _from_memory(self, f, image, feats, prompted):
        """Masks and scores of the objects tracked from memory on this frame (None for the
        prompted ones and for objects with nothing to track from yet)."""
        o = len(self.obj_ids)
        pred, scores = [None] * o, [None] * o
        has_memory = np.array([len(p) > 0 for p in self._prompted])
        write_mask = ~prompted & has_memory
        if not write_mask.any():
            return pred, scores
        options = dict(num_frames=self.num_frames, max_cond=self.max_prompt_frames,
                       fill_hole_area=self.fill_hole_area, policy=self.policy)
        if feats is None:
            step, self.bank = track_image_step_inplace(
                self.params, self.cfg, self.bank, image, f, None, jnp.asarray(write_mask),
                **options)
        else:
            step, self.bank = track_step_inplace(
                self.params, self.cfg, self.bank, feats, f, None, jnp.asarray(write_mask),
                **options)
        for i in np.flatnonzero(write_mask):
            pred[i] = step["pred_masks"][i:i + 1]
            scores[i] = step["object_score_logits"][i:i + 1]
        return pred, scores

    def _prompted_frame(self, i, prompt: Prompt, feats, f, hw):
        """Decode one object's prompts on this frame and store the result as a prompted
        memory (evicting its oldest prompted memory beyond `max_prompt_frames`)."""
        if not isinstance(prompt, Prompt):
            prompt = Prompt(**prompt) if isinstance(prompt, Mapping) else Prompt(*prompt)
        s = self.cfg.image_size
        init_cond = (not self._prompted[i]
                     and not bool(self.bank.valid[i * self.bank.pathways].any()))
        common = dict(reverse=False, num_frames=self.num_frames, init_cond=init_cond,
                      max_cond=self.max_prompt_frames, fill_hole_area=self.fill_hole_area,
                      policy=self.policy)
        row = take_objects(self.bank, [i])
        if prompt.mask is not None:
            mask = mask_prompt_to_input(prompt.mask, s)
            out = decode_frame(self.params, self.cfg, row, feats, f,
                               multimask=use_multimask(self.cfg, init_cond, 0),
                               mask_inputs=mask[None], **common)
        else:
            pts, lab = with_box(*as_points(prompt.points, prompt.labels), prompt.box)
            if len(lab) == 0:
                raise ValueError("a prompt needs points with labels, a box, or a mask")
            h, w = hw
            pts = pts / np.array([w, h], np.float32) * s
            out = decode_frame(self.params, self.cfg, row, feats, f,
                               multimask=use_multimask(self.cfg, init_cond, len(lab)),
                               points=(jnp.asarray(pts[None]), jnp.asarray(lab[None])), **common)
        mem = encode_memory(self.params, self.cfg, feats["image_embed"], out["pred_masks"][:, 0],
                            out["object_score_logits"], True)
        prompted = self._prompted[i]
        if f not in prompted:
            prompted.append(f)
        if len(prompted) > self.max_prompt_frames:  # the oldest becomes an ordinary memory
            self.bank = demote_prompted(self.bank, i, prompted.pop(0))
        self.bank = write_object(self.bank, i, streaming_slot(self.bank, f),
                                 mem["maskmem_features"], out["obj_ptr"], f, True,
                                 out["object_score_logits"],
                                 area=jnp.sum(out["pred_masks"] > 0))
        return out["pred_masks"], out["object_score_logits"]
