"""Stand-ins for what the official automatic mask generator imports but this machine lacks.

`sam2.automatic_mask_generator` imports torchvision's `batched_nms` and `box_area`; with
`min_mask_region_area` > 0 its image predictor labels connected components with the CUDA
extension `sam2._C`, and its `postprocess_small_regions` calls OpenCV's
`connectedComponentsWithStats`. None of them exists here (no torchvision CPU wheel, no
compiled extension, no OpenCV), so the tests give the official code these small versions.
`test_amg_standins.py` checks each against a direct implementation written independently.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import torch
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)


# --- torchvision.ops.boxes ----------------------------------------------------------------

def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of XYXY boxes, (x1 - x0) * (y1 - y0), as torchvision computes it."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's CPU kernel runs it: boxes visited by descending score
    (stable order among ties), each kept box suppresses every later box whose IoU with it
    is above the threshold. Returns the kept indices in visiting order (int64)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    order = torch.sort(scores, stable=True, descending=True)[1]
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
    keep = []
    for pos in range(order.numel()):
        i = int(order[pos])
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's batched_nms: NMS within each category. Like torchvision on CPU, up to
    1000 boxes shift each category's boxes apart and run one NMS; above that, NMS runs per
    category and the kept indices are sorted by score with torch's default (unstable) sort."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    if boxes.numel() <= 4000:
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for category in torch.unique(idxs):
        where = torch.where(idxs == category)[0]
        keep_mask[where[nms(boxes[where], scores[where], iou_threshold)]] = True
    kept = torch.where(keep_mask)[0]
    return kept[scores[kept].sort(descending=True)[1]]


# --- sam2._C (the CUDA connected-components kernel) -----------------------------------------

def get_connected_componnets(mask: torch.Tensor):  # sic: the official kernel's name
    """[N, 1, H, W] uint8 -> (labels, areas), int32 [N, 1, H, W]: 8-connected components of
    each image; a foreground pixel gets its component's label (> 0) and pixel count,
    background 0 and 0."""
    m = mask.numpy().astype(bool)
    labels = np.zeros(m.shape, np.int32)
    areas = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, _ = ndimage.label(m[i, 0], structure=_EIGHT)
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        labels[i, 0] = lab
        areas[i, 0] = sizes[lab]
    return torch.from_numpy(labels), torch.from_numpy(areas)


# --- cv2 --------------------------------------------------------------------------------------

CC_STAT_AREA = 4


def connectedComponentsWithStats(image, connectivity=8):  # noqa: N802 (OpenCV's name)
    """OpenCV's call for a uint8 image: (n_labels, labels int32, stats [n, 5] int32 with
    left, top, width, height, area, centroids [n, 2] float64). Label 0 is every zero
    pixel; the components of non-zero pixels are numbered 1.. in raster order of their
    first pixel, as OpenCV's scan numbers them."""
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    fg = np.asarray(image) != 0
    structure = _EIGHT if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(fg, structure=structure)  # raster order of first pixels
    labels = labels.astype(np.int32)
    stats = np.zeros((n + 1, 5), np.int32)
    centroids = np.zeros((n + 1, 2), np.float64)
    ys, xs = np.indices(fg.shape)
    for k in range(n + 1):
        sel = labels == k
        if not sel.any():
            continue
        y, x = ys[sel], xs[sel]
        stats[k] = [x.min(), y.min(), x.max() - x.min() + 1, y.max() - y.min() + 1, sel.sum()]
        centroids[k] = [x.mean(), y.mean()]
    return n + 1, labels, stats, centroids


# --- installing ------------------------------------------------------------------------------

def _modules():
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    for mod in (ops, boxes):
        mod.batched_nms, mod.box_area, mod.nms = batched_nms, box_area, nms
    ops.boxes = boxes
    ext = types.ModuleType("sam2._C")
    ext.get_connected_componnets = get_connected_componnets
    cv2 = types.ModuleType("cv2")
    cv2.connectedComponentsWithStats = connectedComponentsWithStats
    cv2.CC_STAT_AREA = CC_STAT_AREA
    return {"torchvision.ops": ops, "torchvision.ops.boxes": boxes, "sam2._C": ext, "cv2": cv2}


@contextlib.contextmanager
def official_amg_standins():
    """Within the block the official generator finds torchvision.ops, sam2._C and cv2 (only
    where the real ones are missing); everything is put back afterwards."""
    import official

    official.install_torchvision_standin()
    import sam2
    import torchvision

    saved = {name: sys.modules.get(name) for name in _modules()}
    saved_attrs = {"ops": getattr(torchvision, "ops", None), "_C": getattr(sam2, "_C", None)}
    try:
        for name, mod in _modules().items():
            if saved[name] is None:
                sys.modules[name] = mod
        if saved_attrs["ops"] is None:
            torchvision.ops = sys.modules["torchvision.ops"]
        if saved_attrs["_C"] is None:
            sam2._C = sys.modules["sam2._C"]
        yield
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
        for attr, owner in (("ops", torchvision), ("_C", sam2)):
            if saved_attrs[attr] is None:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attr)
            else:
                setattr(owner, attr, saved_attrs[attr])


def official_generator(model, **kwargs):
    """The official SAM2AutomaticMaskGenerator over an official model, its predictor's feature
    sizes fixed for inputs other than 1024 (see official.official_image_predictor)."""
    with official_amg_standins():
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        gen = SAM2AutomaticMaskGenerator(model, **kwargs)
    s = model.image_size
    gen.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return gen
