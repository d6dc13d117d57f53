"""`SAM2VideoPredictor`: the official video predictor's API over the tracking core.

The official keeps, per object, dicts of per-frame outputs and looks memories up in them by
frame index. Here the memories live in one `MemoryBank` with a slot per frame (all objects on
its leading axis) and the lookups are the bank's selection policy; the host keeps only the
bookkeeping the official API exposes (prompts, per-frame masks and scores, which frames were
tracked in which direction). Propagation runs every object in one batched step per frame.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.mask_postprocess import apply_non_overlapping_constraints
from samv2_jax.predictors.aot import in_background
from samv2_jax.predictors.inputs import as_points, mask_prompt_to_input, with_box
from samv2_jax.predictors.programs import (
    decode_frame,
    encode_image,
    encode_memory,
    to_video_res,
    track_image_step_inplace,
)
from samv2_jax.tracking.bank import (
    MemoryBank,
    append_objects,
    demote_prompted,
    empty_bank,
    forget,
    take_objects,
    write_object,
)
from samv2_jax.tracking.policies import MemoryPolicy, OfficialPolicy, as_policy
from samv2_jax.tracking.step import NO_OBJ_SCORE, use_multimask
from samv2_jax.weights.store import Model

_COND, _NON_COND = "cond_frame_outputs", "non_cond_frame_outputs"


def _bucket(n: int) -> int:
    """Prompted-frame capacity of the compiled step: a power of two, so that adding prompts
    recompiles only now and then."""
    return 1 << max(0, int(n) - 1).bit_length()


class SAM2VideoPredictor:
    """Track objects through a video from prompts on any frames.

    Mirrors `sam2.sam2_video_predictor.SAM2VideoPredictor` as built by the official
    `build_sam2_video_predictor` (its post-processing on: hole filling of 8 pixels, masks from
    clicks binarized before memory encoding, dynamic multimask); outputs are numpy arrays.
    `memory_dtype` is how memories are stored (the official rounds them to bfloat16).
    """

    def __init__(self, model: Model, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 clear_non_cond_mem_around_input: bool = False,
                 add_all_frames_to_correct_as_cond: bool = False,
                 binarize_mask_from_pts_for_mem_enc: bool = True,
                 memory_dtype: str = "bfloat16", policy: MemoryPolicy | str = OfficialPolicy()):
        cfg = model.config
        mem = dataclasses.replace(
            cfg.memory, binarize_mask_from_pts_for_mem_enc=binarize_mask_from_pts_for_mem_enc)
        self.model = model
        self.cfg: SAM2Config = cfg.replace(memory=mem)
        self.params = model.params
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = bool(non_overlap_masks)
        self.clear_non_cond_mem_around_input = bool(clear_non_cond_mem_around_input)
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        if memory_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"memory_dtype must be 'bfloat16' or 'float32', got {memory_dtype!r}")
        self.memory_dtype = jnp.dtype(memory_dtype)
        # the memory policy (a name such as "samurai", or a policy object)
        self.policy = as_policy(policy)

    def _policy(self, state) -> MemoryPolicy:
        return self.policy.for_video((state["video_height"], state["video_width"]))

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    # --- session state ------------------------------------------------------------------

    def init_state(self, video_path, offload_video_to_cpu=False, offload_state_to_cpu=False,
                   async_loading_frames=False) -> dict:
        """Load a video (a folder of JPEG frames, a video file, or an array [T, H, W, 3])
        and start a session. The offload/async flags are accepted for compatibility; frames
        are kept in host memory and moved to the device one at a time."""
        from samv2_jax.io.frames import load_video_frames  # file I/O only when asked for

        # The image encoder compiles on a second thread while the frames are decoded (its
        # first call, below, would otherwise wait for the compiler after the last frame).
        size = self.image_size
        ahead = in_background(encode_image.prepare, self.params, self.cfg,
                              jnp.asarray(np.zeros((1, size, size, 3), np.float32)))
        images, video_height, video_width = load_video_frames(video_path, size)
        ahead.join()  # (a video that fails to load raises at once, without waiting for it)
        state = {
            "images": images,
            "num_frames": len(images),
            "video_height": int(video_height),
            "video_width": int(video_width),
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            "bank": None,
        }
        self._features(state, 0)
        return state

    def reset_state(self, inference_state):
        """Remove every object, prompt and result (the video stays loaded)."""
        s = inference_state
        for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                    "temp_output_dict_per_obj", "frames_tracked_per_obj", "obj_id_to_idx",
                    "obj_idx_to_id"):
            s[key].clear()
        s["obj_ids"] = []
        s["bank"] = None

    def _features(self, state, frame_idx: int):
        cached = state["cached_features"].get(frame_idx)
        if cached is None:
            image = jnp.asarray(state["images"][frame_idx])[None]
            cached = encode_image(self.params, self.cfg, image)
            state["cached_features"] = {frame_idx: cached}  # the latest frame only
        return cached

    def _check_frame(self, state, frame_idx) -> int:
        n = state["num_frames"]
        if not isinstance(frame_idx, (int, np.integer)) or isinstance(frame_idx, bool):
            raise TypeError(f"frame_idx must be an integer, got {type(frame_idx).__name__}")
        if not 0 <= frame_idx < n:
            raise IndexError(f"frame_idx {frame_idx} is outside the video (frames 0..{n - 1})")
        return int(frame_idx)

    def _obj_id_to_idx(self, state, obj_id) -> int:
        idx = state["obj_id_to_idx"].get(obj_id)
        if idx is not None:
            return idx
        idx = len(state["obj_id_to_idx"])
        state["obj_id_to_idx"][obj_id] = idx
        state["obj_idx_to_id"][idx] = obj_id
        state["obj_ids"] = list(state["obj_id_to_idx"])
        state["point_inputs_per_obj"][idx] = {}
        state["mask_inputs_per_obj"][idx] = {}
        state["output_dict_per_obj"][idx] = {_COND: {}, _NON_COND: {}}
        state["temp_output_dict_per_obj"][idx] = {_COND: {}, _NON_COND: {}}
        state["frames_tracked_per_obj"][idx] = {}
        state["bank"] = append_objects(
            state["bank"], empty_bank(self.cfg, 1, state["num_frames"], self.memory_dtype,
                                      policy=self._policy(state)))
        return idx

    def _known_obj_idx(self, state, obj_id) -> int:
        idx = state["obj_id_to_idx"].get(obj_id)
        if idx is None:
            raise KeyError(f"unknown object id {obj_id!r}; known ids: {state['obj_ids']}")
        return idx

    @staticmethod
    def _bank_row(state, obj_idx: int) -> MemoryBank:
        return take_objects(state["bank"], [obj_idx])

    def _num_cond(self, state, obj_indices) -> int:
        counts = [len(state["output_dict_per_obj"][i][_COND]) for i in obj_indices]
        limit = self.cfg.memory.max_cond_frames_in_attn
        n = max(counts, default=1)
        return _bucket(max(1, n if limit == -1 else min(n, limit)))

    # --- prompts ------------------------------------------------------------------------

    def add_new_points_or_box(self, inference_state, frame_idx, obj_id, points=None,
                              labels=None, clear_old_points=True, normalize_coords=True,
                              box=None):
        """Add clicks and/or a box for one object on one frame; returns (frame_idx, obj_ids,
        masks [num_objects, 1, H, W] logits at the video's resolution)."""
        s = inference_state
        frame_idx = self._check_frame(s, frame_idx)
        pts, lab = as_points(points, labels)
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        if box is not None and not clear_old_points:
            raise ValueError("cannot add a box without clearing old points: a box must "
                             "come before any click (use clear_old_points=True)")
        pts, lab = with_box(pts, lab, box)
        if normalize_coords:
            pts = pts / np.array([s["video_width"], s["video_height"]], np.float32)
        pts = pts * self.image_size
        obj_idx = self._obj_id_to_idx(s, obj_id)
        point_inputs_per_frame = s["point_inputs_per_obj"][obj_idx]
        old = None if clear_old_points else point_inputs_per_frame.get(frame_idx)
        if old is not None:
            pts = np.concatenate([old["point_coords"][0], pts], 0)
            lab = np.concatenate([old["point_labels"][0], lab], 0)
        point_inputs = {"point_coords": pts[None], "point_labels": lab[None]}
        point_inputs_per_frame[frame_idx] = point_inputs
        s["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)

        init_cond, reverse, is_cond, key = self._frame_role(s, obj_idx, frame_idx)
        prev = self._stored_output(s, obj_idx, frame_idx, key)
        prev_logits = None
        if prev is not None:
            prev_logits = jnp.clip(prev["pred_masks"][:, 0], -32.0, 32.0)
        out = decode_frame(
            self.params, self.cfg, self._bank_row(s, obj_idx), self._features(s, frame_idx),
            frame_idx, reverse=reverse, num_frames=s["num_frames"], init_cond=init_cond,
            multimask=use_multimask(self.cfg, init_cond, len(lab)),
            max_cond=self._num_cond(s, [obj_idx]),
            points=(jnp.asarray(pts[None]), jnp.asarray(lab[None])),
            prev_mask_logits=prev_logits, fill_hole_area=self.fill_hole_area,
            policy=self._policy(s))
        s["temp_output_dict_per_obj"][obj_idx][key][frame_idx] = self._compact(out)
        return frame_idx, s["obj_ids"], self._consolidated(s, frame_idx, is_cond)

    def add_new_points(self, *args, **kwargs):
        """Deprecated official alias of `add_new_points_or_box`."""
        return self.add_new_points_or_box(*args, **kwargs)

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        """Give one object's mask (2-D, any size: resized to the model's input) on a frame."""
        s = inference_state
        frame_idx = self._check_frame(s, frame_idx)
        mask_in = mask_prompt_to_input(mask, self.image_size)
        obj_idx = self._obj_id_to_idx(s, obj_id)
        s["mask_inputs_per_obj"][obj_idx][frame_idx] = mask_in[None, None]
        s["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        init_cond, reverse, is_cond, key = self._frame_role(s, obj_idx, frame_idx)
        out = decode_frame(
            self.params, self.cfg, self._bank_row(s, obj_idx), self._features(s, frame_idx),
            frame_idx, reverse=reverse, num_frames=s["num_frames"], init_cond=init_cond,
            multimask=use_multimask(self.cfg, init_cond, 0),
            max_cond=self._num_cond(s, [obj_idx]), mask_inputs=mask_in[None],
            fill_hole_area=self.fill_hole_area, policy=self._policy(s))
        s["temp_output_dict_per_obj"][obj_idx][key][frame_idx] = self._compact(out)
        return frame_idx, s["obj_ids"], self._consolidated(s, frame_idx, is_cond)

    def _frame_role(self, s, obj_idx, frame_idx):
        """How a prompt on this frame is decoded and stored: (first prompt for the object
        here, tracking direction it was reached in, stored as a prompted frame, storage key)."""
        tracked = s["frames_tracked_per_obj"][obj_idx]
        init_cond = frame_idx not in tracked
        reverse = False if init_cond else tracked[frame_idx]["reverse"]
        is_cond = init_cond or self.add_all_frames_to_correct_as_cond
        return init_cond, reverse, is_cond, _COND if is_cond else _NON_COND

    @staticmethod
    def _compact(out) -> dict:
        return {"pred_masks": out["pred_masks"], "obj_ptr": out["obj_ptr"],
                "object_score_logits": out["object_score_logits"], "has_memory": False}

    @staticmethod
    def _stored_output(s, obj_idx, frame_idx, key):
        out = s["temp_output_dict_per_obj"][obj_idx][key].get(frame_idx)
        if out is None:
            out = s["output_dict_per_obj"][obj_idx][_COND].get(frame_idx)
        if out is None:
            out = s["output_dict_per_obj"][obj_idx][_NON_COND].get(frame_idx)
        return out

    def _consolidated(self, s, frame_idx, is_cond) -> np.ndarray:
        """Every object's mask on a frame at video resolution (-1024 where an object has none)."""
        key = _COND if is_cond else _NON_COND
        h, w = s["video_height"], s["video_width"]
        low = self.cfg.low_res_mask_size
        masks = []
        for obj_idx in range(len(s["obj_ids"])):
            out = self._stored_output(s, obj_idx, frame_idx, key)
            masks.append(None if out is None else out["pred_masks"])
        present = [m for m in masks if m is not None]
        if not present:
            return np.full((len(masks), 1, h, w), NO_OBJ_SCORE, np.float32)
        stacked = jnp.concatenate(
            [m if m is not None else jnp.full((1, 1, low, low), NO_OBJ_SCORE) for m in masks])
        video = np.array(to_video_res(stacked, (h, w), False))
        for i, m in enumerate(masks):
            if m is None:  # an object with no output here is absent, at any resolution
                video[i] = NO_OBJ_SCORE
        if self.non_overlap_masks:
            video = np.asarray(apply_non_overlapping_constraints(jnp.asarray(video)))
        return video

    # --- propagation --------------------------------------------------------------------

    def propagate_in_video_preflight(self, inference_state):
        """Encode the memories of newly prompted frames and move them into the bank."""
        s = inference_state
        if not s["obj_ids"]:
            raise RuntimeError("no points, box or mask given for any object; add prompts "
                               "with add_new_points_or_box or add_new_mask first")
        for obj_idx in range(len(s["obj_ids"])):
            temp = s["temp_output_dict_per_obj"][obj_idx]
            outs = s["output_dict_per_obj"][obj_idx]
            cond_frames = set(outs[_COND]) | set(temp[_COND])
            for key in (_NON_COND, _COND):
                for frame_idx, out in temp[key].items():
                    is_cond = key == _COND
                    if not is_cond and frame_idx in cond_frames:
                        continue  # the official drops a non-prompt output on a prompted frame
                    if not out["has_memory"]:
                        mem = encode_memory(
                            self.params, self.cfg, self._features(s, frame_idx)["image_embed"],
                            out["pred_masks"][:, 0], out["object_score_logits"], True)
                        s["bank"] = write_object(
                            s["bank"], obj_idx, frame_idx, mem["maskmem_features"],
                            out["obj_ptr"], frame_idx, is_cond, out["object_score_logits"],
                            area=jnp.sum(out["pred_masks"] > 0))
                        out = dict(out, has_memory=True)
                    outs[key][frame_idx] = out
                    if is_cond:
                        outs[_NON_COND].pop(frame_idx, None)
                    if self.clear_non_cond_mem_around_input:
                        self._clear_non_cond_mem_around_input(s, frame_idx, obj_idx)
                temp[key].clear()
            if not outs[_COND]:
                raise RuntimeError(
                    f"no prompts for object id {s['obj_idx_to_id'][obj_idx]} on any frame; "
                    "add points, a box or a mask for it, or remove it with remove_object")

    def _clear_non_cond_mem_around_input(self, s, frame_idx, obj_idx=None):
        r = self.cfg.memory.memory_temporal_stride_for_eval * self.cfg.memory.num_maskmem
        lo, hi = frame_idx - r, frame_idx + r
        objs = range(len(s["obj_ids"])) if obj_idx is None else [obj_idx]
        bank = s["bank"]
        drop = np.zeros((bank.num_objects, bank.capacity), bool)
        for i in objs:
            non_cond = s["output_dict_per_obj"][i][_NON_COND]
            for t in range(lo, hi + 1):
                if non_cond.pop(t, None) is not None:
                    drop[i, t] = True
        drop = np.repeat(drop, bank.pathways, axis=0)  # every row of an object
        s["bank"] = forget(bank, jnp.asarray(drop) & ~bank.is_cond)

    def propagate_in_video(self, inference_state, start_frame_idx=None,
                           max_frame_num_to_track=None, reverse=False
                           ) -> Iterator[tuple[int, list, np.ndarray]]:
        """Track every object through the video, yielding (frame_idx, obj_ids, masks
        [num_objects, 1, H, W] logits at video resolution) frame by frame."""
        s = inference_state
        self.propagate_in_video_preflight(s)
        num_frames = s["num_frames"]
        obj_ids = s["obj_ids"]
        o = len(obj_ids)
        outs = [s["output_dict_per_obj"][i] for i in range(o)]
        if start_frame_idx is None:
            start_frame_idx = min(t for d in outs for t in d[_COND])
        start_frame_idx = self._check_frame(s, start_frame_idx)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else []
        else:
            end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            order = range(start_frame_idx, end + 1)
        max_cond = self._num_cond(s, range(o))
        hw = (s["video_height"], s["video_width"])
        for frame_idx in order:
            is_cond = np.array([frame_idx in d[_COND] for d in outs])
            if is_cond.all():
                pred = jnp.concatenate([d[_COND][frame_idx]["pred_masks"] for d in outs])
            else:
                image = jnp.asarray(s["images"][frame_idx])[None]
                step, s["bank"] = track_image_step_inplace(
                    self.params, self.cfg, s["bank"], image, frame_idx,
                    jnp.full((o,), frame_idx, jnp.int32), jnp.asarray(~is_cond),
                    reverse=bool(reverse), num_frames=num_frames, max_cond=max_cond,
                    fill_hole_area=self.fill_hole_area, policy=self._policy(s))
                rows = []
                for i, d in enumerate(outs):
                    if is_cond[i]:
                        rows.append(d[_COND][frame_idx]["pred_masks"])
                        continue
                    out = {k: step[k][i:i + 1] for k in
                           ("pred_masks", "obj_ptr", "object_score_logits")}
                    d[_NON_COND][frame_idx] = dict(out, has_memory=True)
                    rows.append(out["pred_masks"])
                pred = jnp.concatenate(rows)
            for i in range(o):
                if is_cond[i] and self.clear_non_cond_mem_around_input:
                    self._clear_non_cond_mem_around_input(s, frame_idx, i)
                s["frames_tracked_per_obj"][i][frame_idx] = {"reverse": bool(reverse)}
            yield frame_idx, obj_ids, np.asarray(to_video_res(pred, hw, self.non_overlap_masks))

    # --- removing prompts and objects ---------------------------------------------------

    def clear_all_prompts_in_frame(self, inference_state, frame_idx, obj_id, need_output=True):
        """Remove one object's clicks, box and mask on a frame (its result there stays, as an
        ordinary tracked frame)."""
        s = inference_state
        frame_idx = self._check_frame(s, frame_idx)
        obj_idx = self._known_obj_idx(s, obj_id)
        s["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        s["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        temp = s["temp_output_dict_per_obj"]
        temp[obj_idx][_COND].pop(frame_idx, None)
        temp[obj_idx][_NON_COND].pop(frame_idx, None)
        outs = s["output_dict_per_obj"][obj_idx]
        out = outs[_COND].pop(frame_idx, None)
        if out is not None:
            outs[_NON_COND][frame_idx] = out
            s["frames_tracked_per_obj"][obj_idx].pop(frame_idx, None)
            s["bank"] = demote_prompted(s["bank"], obj_idx, frame_idx)
        if not need_output:
            return None
        is_cond = any(frame_idx in t[_COND] for t in temp.values())
        return frame_idx, s["obj_ids"], self._consolidated(s, frame_idx, is_cond)

    def remove_object(self, inference_state, obj_id, strict=False, need_output=True):
        """Forget an object; returns (remaining obj_ids, [(frame_idx, masks)] for the frames
        where it had prompts)."""
        s = inference_state
        old_idx = s["obj_id_to_idx"].get(obj_id)
        updated = []
        if old_idx is None:
            if not strict:
                return s["obj_ids"], updated
            raise RuntimeError(f"cannot remove object id {obj_id!r}: it does not exist "
                               f"(known ids: {s['obj_ids']})")
        if len(s["obj_id_to_idx"]) == 1:
            self.reset_state(s)
            return s["obj_ids"], updated
        frames = set(s["point_inputs_per_obj"][old_idx]) | set(s["mask_inputs_per_obj"][old_idx])
        for f in frames:
            self.clear_all_prompts_in_frame(s, f, obj_id, need_output=False)
        keep = [i for i in range(len(s["obj_ids"])) if i != old_idx]
        new_ids = [s["obj_ids"][i] for i in keep]
        s["obj_id_to_idx"] = OrderedDict((oid, i) for i, oid in enumerate(new_ids))
        s["obj_idx_to_id"] = OrderedDict((i, oid) for i, oid in enumerate(new_ids))
        s["obj_ids"] = new_ids
        for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                    "temp_output_dict_per_obj", "frames_tracked_per_obj"):
            s[key] = {new: s[key][old] for new, old in enumerate(keep)}
        s["bank"] = take_objects(s["bank"], keep)
        if need_output:
            temp = s["temp_output_dict_per_obj"]
            for f in sorted(frames):
                is_cond = any(f in t[_COND] for t in temp.values())
                updated.append((f, self._consolidated(s, f, is_cond)))
        return s["obj_ids"], updated
