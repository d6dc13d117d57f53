"""Box tracking scores as LaSOT / GOT-10k / OTB report them (and SAMURAI and DAM4SAM with
them): the success curve (share of frames whose box IoU exceeds each threshold in 0, 0.05,
..., 1) and its area (AUC), and precision (share of frames whose centre error is within
20 pixels), with the normalised precision of LaSOT (centre error over the ground-truth size,
within 0.2). Boxes are (x, y, width, height)."""

from __future__ import annotations

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of [N, 4] (x, y, w, h) boxes, row by row."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x0 = np.maximum(a[:, 0], b[:, 0])
    y0 = np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_to_box_xywh(mask: np.ndarray) -> np.ndarray:
    """The (x, y, w, h) box of a binary mask's pixels (w, h count pixels); zeros if empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1],
                    np.float64)


def box_scores(pred: np.ndarray, gt: np.ndarray, valid=None) -> dict:
    """Success AUC, precision@20 px and normalised precision@0.2 of [T, 4] predictions
    against the ground truth; `valid` [T] marks frames that have a ground-truth box (by
    default those with positive width and height)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if valid is None:
        valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)
    pred, gt = pred[valid], gt[valid]
    iou = box_iou_xywh(pred, gt)
    success = np.array([(iou > t).mean() for t in SUCCESS_THRESHOLDS])
    pc = pred[:, :2] + pred[:, 2:] / 2
    gc = gt[:, :2] + gt[:, 2:] / 2
    err = np.linalg.norm(pc - gc, axis=1)
    norm_err = np.linalg.norm((pc - gc) / np.maximum(gt[:, 2:], 1e-12), axis=1)
    return {"success_auc": float(success.mean()), "success_curve": success.tolist(),
            "precision": float((err <= 20).mean()),
            "normalized_precision": float((norm_err <= 0.2).mean()),
            "frames": int(valid.sum())}
