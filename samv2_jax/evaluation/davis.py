"""J (region similarity), F (boundary accuracy) and J&F, as the DAVIS 2017 evaluation defines
them for the semi-supervised protocol (davisvideochallenge/davis2017-evaluation).

Per object and frame: J is the IoU of the masks (1 when both are empty); F is the F-measure
of boundary pixels matched within a tolerance of ceil(0.008 * image diagonal) pixels. The
first and last frames are left out (the first is the prompt). Per object, the mean over
frames (M), the share of frames above 0.5 (recall, R) and the decay from the first to the
last quarter (D); J&F is the mean of J-M and F-M over all objects of all videos.
"""

from __future__ import annotations

import math

import numpy as np


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J per frame: gt, pred [T, H, W] (or [H, W]) binary -> [T] IoU (1 where both empty)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    inter = (gt & pred).sum((-2, -1))
    union = (gt | pred).sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a binary mask, offset half a pixel towards the origin (the
    DAVIS / BSDS `seg2bmap` at the mask's own size)."""
    seg = np.asarray(seg, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[None, :] ** 2 + r[:, None] ** 2) <= radius ** 2


def _dilate(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Binary dilation by a centred structuring element; outside the image counts as 0."""
    h, w = mask.shape
    k = structure.shape[0] // 2
    padded = np.pad(mask, k)
    out = np.zeros_like(mask)
    for dy, dx in zip(*np.nonzero(structure)):
        out |= padded[dy:dy + h, dx:dx + w]
    return out


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """F for one frame (2-D binary masks)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    fg_b, gt_b = boundary_map(pred), boundary_map(gt)
    disk = _disk(int(bound_pix))
    fg_dil, gt_dil = _dilate(fg_b, disk), _dilate(gt_b, disk)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = (fg_b & gt_dil).sum() / float(n_fg)
        recall = (gt_b & fg_dil).sum() / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def boundary_accuracy(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """F per frame: [T, H, W] -> [T]."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} and {pred.shape}")
    return np.array([boundary_f(g, p, bound_th) for g, p in zip(gt, pred)])


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values, as DAVIS reports them."""
    values = np.asarray(values, np.float64)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    with np.errstate(invalid="ignore"):
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def evaluate_video(gt_labels: np.ndarray, pred_labels: np.ndarray) -> dict:
    """Semi-supervised J and F of one video from label maps [T, H, W] (0 background, k the
    k-th object; 255 in the ground truth is void and counts as background, as DAVIS does).
    Objects are 1..max label of the first ground-truth frame. Returns per object
    {"J": (M, R, D), "F": (M, R, D), "J_frames", "F_frames"}."""
    gt = np.asarray(gt_labels).copy()
    pred = np.asarray(pred_labels)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and predictions {pred.shape} differ in shape")
    gt[gt == 255] = 0
    num = int(gt[0].max())
    out = {}
    for k in range(1, num + 1):
        g, p = gt[1:-1] == k, pred[1:-1] == k
        j = region_similarity(g, p)
        f = boundary_accuracy(g, p)
        out[k] = {"J": statistics(j), "F": statistics(f), "J_frames": j, "F_frames": f}
    return out


def summarize(per_video: dict) -> dict:
    """Per-object table rows and the global means from {video: evaluate_video(...)}."""
    rows = []
    for video, objects in per_video.items():
        for k, r in objects.items():
            rows.append({"sequence": f"{video}_{k}", "J": r["J"][0], "F": r["F"][0],
                         "J&F": (r["J"][0] + r["F"][0]) / 2,
                         "J_recall": r["J"][1], "J_decay": r["J"][2],
                         "F_recall": r["F"][1], "F_decay": r["F"][2]})
    if not rows:
        return {"objects": [], "J&F": float("nan"), "J": float("nan"), "F": float("nan")}
    jm = float(np.mean([r["J"] for r in rows]))
    fm = float(np.mean([r["F"] for r in rows]))
    return {"objects": rows, "J&F": (jm + fm) / 2, "J": jm, "F": fm,
            "J_recall": float(np.mean([r["J_recall"] for r in rows])),
            "J_decay": float(np.mean([r["J_decay"] for r in rows])),
            "F_recall": float(np.mean([r["F_recall"] for r in rows])),
            "F_decay": float(np.mean([r["F_decay"] for r in rows]))}
