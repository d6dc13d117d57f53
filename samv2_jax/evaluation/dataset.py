"""Run a tracker over a DAVIS / MOSE style dataset and score it.

The folder holds `JPEGImages/<video>/*.jpg` and `Annotations/<video>/*.png` (palettized label
maps, 0 background, k object k; DAVIS's `480p` level in between is found too). The
semi-supervised protocol: every object's first-frame mask is its prompt, the tracker runs
through the video, and J / F are computed on the frames in between (`davis.evaluate_video`).
With `boxes=True` each object is prompted by the box of its first mask instead and scored as a
box tracker (`boxes.box_scores` on the boxes of predicted and ground-truth masks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from samv2_jax.evaluation.boxes import box_scores, mask_to_box_xywh
from samv2_jax.evaluation.davis import evaluate_video, summarize


def dataset_videos(root) -> tuple[Path, Path, list[str]]:
    """(frames folder, annotations folder, video names) of a DAVIS / MOSE style folder."""
    root = Path(root)
    images, annotations = root / "JPEGImages", root / "Annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise ValueError(f"{str(root)!r} is not a DAVIS/MOSE-style dataset: it needs "
                         "JPEGImages/<video>/ and Annotations/<video>/ folders")
    if (images / "480p").is_dir() and (annotations / "480p").is_dir():
        images, annotations = images / "480p", annotations / "480p"
    names = sorted(p.name for p in images.iterdir()
                   if p.is_dir() and (annotations / p.name).is_dir())
    if not names:
        raise ValueError(f"no video in {str(images)!r} has annotations in {str(annotations)!r}")
    return images, annotations, names


def read_labels(folder: Path, names: list[str]) -> np.ndarray:
    """[T, H, W] uint8 label maps of the given frame names (a missing PNG: all zero)."""
    first = next((folder / f"{n}.png" for n in names if (folder / f"{n}.png").exists()), None)
    if first is None:
        raise ValueError(f"{str(folder)!r} has no annotation PNG for these frames")
    shape = np.asarray(Image.open(first)).shape[:2]
    out = np.zeros((len(names), *shape), np.uint8)
    for i, n in enumerate(names):
        p = folder / f"{n}.png"
        if p.exists():
            out[i] = np.asarray(Image.open(p))
    return out


def labels_from_logits(masks: np.ndarray, obj_ids) -> np.ndarray:
    """[O, 1, H, W] logits -> [H, W] label map: each pixel the object with the highest
    positive logit (0 where none is positive)."""
    m = np.asarray(masks)[:, 0]
    best = np.argmax(m, axis=0)
    ids = np.asarray(list(obj_ids), np.int64)
    return np.where(m.max(0) > 0, ids[best], 0).astype(np.uint8)


def track_video(predictor, frames_dir: Path, first_labels: np.ndarray, *, boxes: bool,
                max_frames: int | None = None) -> np.ndarray:
    """Label maps [T, H, W] of one video: every object of the first label map prompted on
    frame 0 (its mask, or its box with `boxes`), tracked forward."""
    state = predictor.init_state(str(frames_dir))
    objects = [int(k) for k in np.unique(first_labels) if k not in (0, 255)]
    if not objects:
        raise ValueError(f"{str(frames_dir)!r}: the first annotation has no object")
    for k in objects:
        mask = first_labels == k
        if boxes:
            x, y, w, h = mask_to_box_xywh(mask)
            predictor.add_new_points_or_box(state, 0, k, box=[x, y, x + w, y + h],
                                            normalize_coords=True)
        else:
            predictor.add_new_mask(state, 0, k, mask)
    n = state["num_frames"] if max_frames is None else min(max_frames, state["num_frames"])
    labels = np.zeros((n, *first_labels.shape), np.uint8)
    for f, ids, masks in predictor.propagate_in_video(state, max_frame_num_to_track=n - 1):
        if f < n:
            labels[f] = labels_from_logits(masks, ids)
    return labels


def evaluate_dataset(predictor, root, *, videos=None, boxes: bool = False,
                     max_frames: int | None = None, progress=None) -> dict:
    """Track and score every video (or the named ones). Returns {"videos": {name: per-object
    scores}, "summary": ...}: J&F tables for masks, success AUC / precision for boxes."""
    images, annotations, names = dataset_videos(root)
    if videos:
        missing = sorted(set(videos) - set(names))
        if missing:
            raise ValueError(f"no such video(s) in the dataset: {missing}")
        names = [n for n in names if n in set(videos)]
    per_video, box_results = {}, {}
    for name in names:
        frame_names = sorted(p.stem for p in (images / name).iterdir()
                             if p.suffix.lower() in (".jpg", ".jpeg"))
        gt = read_labels(annotations / name, frame_names)
        if max_frames is not None:
            gt = gt[:max_frames]
        pred = track_video(predictor, images / name, gt[0], boxes=boxes, max_frames=max_frames)
        per_video[name] = evaluate_video(gt, pred)
        if boxes:
            box_results[name] = {}
            for k in per_video[name]:
                g = np.stack([mask_to_box_xywh(m == k) for m in gt[1:]])
                p = np.stack([mask_to_box_xywh(m == k) for m in pred[1:]])
                box_results[name][k] = box_scores(p, g)
        if progress is not None:
            progress(name, per_video[name])
    out = {"videos": per_video, "summary": summarize(per_video)}
    if boxes:
        scores = [s for v in box_results.values() for s in v.values()]
        out["boxes"] = box_results
        out["box_summary"] = {
            "success_auc": float(np.mean([s["success_auc"] for s in scores])),
            "precision": float(np.mean([s["precision"] for s in scores])),
            "normalized_precision": float(np.mean([s["normalized_precision"] for s in scores]))}
    return out
