"""Segment everything: `SAM2AutomaticMaskGenerator`, the official class's API over a pipeline
that does the heavy work under jit and never upsamples a mask it is going to throw away.

Per crop of the image (the whole image, then the tiles of each crop layer):

1. encode the crop once;
2. decode the point grid in batches (optionally refining each mask once with its own logits
   as a mask prompt, `use_m2m`), fill small holes and drop small sprinkles at low resolution
   (`min_mask_region_area`), apply the predicted-IoU filter, and bound every mask's stability
   score from its low-resolution logits, all in one compiled program;
3. only the masks that can still pass get their exact stability score and box, as the
   official computes them on the upsampled masks but without upsampling: only the pixels
   of the low-resolution cells a threshold cuts through are computed (`cells.py`); the
   crop-edge filter and NMS (by predicted IoU) run in JAX;
4. the survivors' masks are made at the crop's size the same way, kept as their boxes'
   pixels only (RLE is encoded from those, at their offset in the image).

NMS across crops (smaller crops preferred) follows, then the records. The numbers are the
official ones: the same prompts, filters, thresholds and tie-breaks, in the same order.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.automatic import masks as M
from samv2_jax.automatic.cells import CellMasks, stability_and_boxes
from samv2_jax.automatic.decoder import decode_points
from samv2_jax.automatic.grids import build_all_layer_point_grids, generate_crop_boxes
from samv2_jax.config import SAM2Config
from samv2_jax.modeling.image_encoder import encode_image
from samv2_jax.modeling.mask_postprocess import fill_holes_and_remove_sprinkles
from samv2_jax.modeling.transforms import preprocess_image
from samv2_jax.predictors.inputs import as_rgb_uint8, transform_coords

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


# --- compiled steps -----------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("image_size",))
def _preprocess(image_uint8, image_size: int):
    return preprocess_image(image_uint8, image_size)[None]


def encode_crop(params, cfg: SAM2Config, image_uint8):
    """One HWC uint8 crop -> its `encode_image` features (batch 1). Only the resize is
    compiled per crop size; the encoder sees the model's fixed input size."""
    return encode_image(params, cfg, _preprocess(image_uint8, cfg.image_size))


@functools.partial(jax.jit, static_argnames=("cfg", "multimask_output", "use_m2m",
                                             "hole_area"))
def screen_points(params, cfg: SAM2Config, feats, coords, valid, cell_weights, thresholds, *,
                  multimask_output: bool, use_m2m: bool, hole_area: float):
    """Decode B single-point prompts and screen their masks at low resolution.

    coords [B, 2] in the model's input frame, valid [B] (padding prompts are never
    candidates), thresholds [4]: pred_iou_thresh, stability_score_thresh and the stability
    score's two cut-offs mask_threshold +- stability_score_offset (traced, so changing them
    compiles nothing). Returns (logits
    [B * M, n, n] as the official upsamples them, i.e. after hole filling, predicted IoUs
    [B * M], candidate [B * M]): a candidate passes the IoU filter (when its threshold is
    > 0) and its stability bound does not rule it out. Masks are point-major, as the
    official flattens them.
    """
    iou_thresh, stab_thresh, high, low_cut = (thresholds[i] for i in range(4))
    b = coords.shape[0]
    labels = jnp.ones((b, 1), jnp.int32)
    low, ious = decode_points(params, cfg, feats, coords[:, None], labels,
                              multimask_output=multimask_output)
    m = low.shape[1]
    low = low.reshape(b * m, *low.shape[2:]).astype(jnp.float32)
    ious = ious.reshape(b * m).astype(jnp.float32)
    if use_m2m:
        # Official `refine_with_m2m`: each mask's clamped logits prompt its own point again.
        rep = jnp.repeat(coords, m, axis=0)[:, None]
        low, ious = decode_points(params, cfg, feats, rep, jnp.ones((b * m, 1), jnp.int32),
                                  jnp.clip(low, -32.0, 32.0), multimask_output=False)
        low, ious = low[:, 0].astype(jnp.float32), ious[:, 0].astype(jnp.float32)
    if hole_area > 0:
        # The official image predictor's clean-up, at its own threshold (0), not the AMG's.
        low = fill_holes_and_remove_sprinkles(low, 0.0, hole_area, hole_area)
    cand = jnp.repeat(valid, m)
    cand &= (iou_thresh <= 0) | (ious > iou_thresh)
    bound = M.stability_upper_bound(low, cell_weights, high, low_cut)
    cand &= (stab_thresh <= 0) | (bound >= stab_thresh)
    return low, ious, cand


@jax.jit
def _take(logits, idx):
    return logits[idx]


# --- the generator --------------------------------------------------------------------------

def _bucket(n: int, least: int = 64) -> int:
    """Padded length for n items: powers of two, so only a few shapes get compiled."""
    return max(least, 1 << max(0, int(n - 1).bit_length()))


def _as_model(model):
    if hasattr(model, "config") and hasattr(model, "params"):
        return model
    if isinstance(model, (str, os.PathLike)):
        from samv2_jax.weights.store import load

        return load(model)
    raise TypeError("SAM2AutomaticMaskGenerator needs a samv2_jax Model (samv2_jax.load(...)) "
                    f"or a model name or path that samv2_jax.load takes, got "
                    f"{type(model).__name__}")


class SAM2AutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of single-point prompts.

    Mirrors `sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`: the same constructor
    arguments and defaults, and `generate(image)` returns the same records. `model` is a
    samv2_jax Model, or a name or path that `samv2_jax.load` takes.
    `points_per_batch` prompts are decoded per compiled call (more is faster on GPU/TPU);
    after `generate`, `timings` holds its seconds: "encode" (all crops), "decode" (waiting
    for the decoder and low-resolution screening), "total".
    """

    def __init__(self, model, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0,
                 box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids=None,
                 min_mask_region_area: int = 0, output_mode: str = "binary_mask",
                 use_m2m: bool = False, multimask_output: bool = True, **kwargs: Any) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side (a regular grid) and "
                             "point_grids (one [N, 2] array of points in [0, 1] per crop layer)")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode {output_mode!r} is not one of {OUTPUT_MODES}")
        if int(crop_n_layers) < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if int(points_per_batch) <= 0:
            raise ValueError(f"points_per_batch must be positive, got {points_per_batch}")
        if points_per_side is not None:
            if int(points_per_side) <= 0:
                raise ValueError(f"points_per_side must be positive, got {points_per_side}")
            if int(crop_n_points_downscale_factor) <= 0:
                raise ValueError("crop_n_points_downscale_factor must be positive, got "
                                 f"{crop_n_points_downscale_factor}")
            scale = int(crop_n_points_downscale_factor)
            if int(int(points_per_side) / scale ** int(crop_n_layers)) < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                    f"{scale} leaves crop layer {crop_n_layers} without points; use more "
                    "points per side, a smaller factor or fewer crop layers")
            grids = build_all_layer_point_grids(int(points_per_side), int(crop_n_layers), scale)
        else:
            grids = [np.asarray(g, np.float64) for g in point_grids]
            for i, g in enumerate(grids):
                if g.ndim != 2 or g.shape[1] != 2:
                    raise ValueError(f"point_grids[{i}] must be [N, 2] (x, y) in [0, 1], got "
                                     f"shape {g.shape}")
        if len(grids) < int(crop_n_layers) + 1:
            raise ValueError(f"point_grids has {len(grids)} grids for {int(crop_n_layers) + 1} "
                             "crop layers (the image itself and crop_n_layers); give one per "
                             "layer")
        self.model = _as_model(model)
        self.point_grids = grids
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.timings: dict[str, float] = {}

    @classmethod
    def from_pretrained(cls, model_id: str, **kwargs: Any) -> SAM2AutomaticMaskGenerator:
        """A generator over `samv2_jax.load(model_id)` (an official name such as
        "sam2.1_hiera_tiny", a checkpoint or a converted directory); `image_size` goes to the
        model, every other keyword to the generator."""
        from samv2_jax.weights.store import load

        image_size = kwargs.pop("image_size", None)
        model = load(model_id) if image_size is None else load(model_id, image_size=image_size)
        return cls(model, **kwargs)

    @property
    def config(self) -> SAM2Config:
        return self.model.config

    @property
    def predictor(self):
        """A `SAM2ImagePredictor` over the same model with the generator's clean-up settings
        (the official attribute; `generate` does not go through it)."""
        from samv2_jax.predictors.image import SAM2ImagePredictor

        if getattr(self, "_predictor", None) is None:
            area = float(self.min_mask_region_area)
            self._predictor = SAM2ImagePredictor(self.model, max_hole_area=area,
                                                 max_sprinkle_area=area)
        return self._predictor

    # -- generate --

    def generate(self, image) -> list[dict[str, Any]]:
        """All masks of an HWC uint8 RGB image (or PIL image), as a list of records:
        segmentation (bool [H, W] array, or an RLE dict with the RLE output modes), area,
        bbox (XYWH), predicted_iou, point_coords ([[x, y]]), stability_score, crop_box (XYWH).
        """
        image = as_rgb_uint8(image)
        start = time.perf_counter()
        self.timings = {"encode": 0.0, "decode": 0.0}
        orig_hw = tuple(int(v) for v in image.shape[:2])
        crop_boxes, layer_idxs = generate_crop_boxes(orig_hw, self.crop_n_layers,
                                                     self.crop_overlap_ratio)
        found = [self._process_crop(image, box, layer, orig_hw)
                 for box, layer in zip(crop_boxes, layer_idxs)]
        records = [r for crop in found for r in crop]
        if len(crop_boxes) > 1 and records:
            records = self._nms_across_crops(records)
        out = [self._record(r, orig_hw) for r in records]
        self.timings["total"] = time.perf_counter() - start
        return out

    def _process_crop(self, image, crop_box, layer_idx, orig_hw) -> list[dict]:
        cfg, params = self.config, self.model.params
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_hw = tuple(int(v) for v in crop.shape[:2])
        t = time.perf_counter()
        feats = jax.block_until_ready(encode_crop(params, cfg, jnp.asarray(crop)))
        self.timings["encode"] += time.perf_counter() - t

        # The official scales the float64 grid by the crop size, then works in float32.
        points = (self.point_grids[layer_idx] * np.array(crop_hw)[None, ::-1]).astype(np.float32)
        coords = transform_coords(points, crop_hw, cfg.image_size).astype(np.float32)
        weights = M.cell_weights(cfg.low_res_mask_size, crop_hw)
        static = dict(multimask_output=self.multimask_output, use_m2m=self.use_m2m,
                      hole_area=float(self.min_mask_region_area))
        # Sums in double, then float32: the official compares float32 masks with Python floats.
        t, o = self.mask_threshold, self.stability_score_offset
        thresholds = jnp.asarray([self.pred_iou_thresh, self.stability_score_thresh, t + o,
                                  t - o], jnp.float32)
        per_point = 3 if self.multimask_output else 1  # masks per prompt, point-major
        bsz = self.points_per_batch
        n = len(points)

        def launch(s):
            chunk = coords[s:s + bsz]
            valid = np.zeros(bsz, bool)
            valid[:len(chunk)] = True
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bsz - len(chunk), 0)])
            return screen_points(params, cfg, feats, jnp.asarray(chunk), jnp.asarray(valid),
                                 weights, thresholds, **static)

        # Candidates that pass: their low-resolution logits, IoU, stability, box and point.
        logits, ious, stabs, boxes, pts = [], [], [], [], []
        cuts = np.float32([t + o, t - o, t])  # the official's float32 comparisons
        starts = list(range(0, n, bsz))
        pending = launch(starts[0]) if starts else None
        for i, s in enumerate(starts):
            low, iou, cand = pending
            if i + 1 < len(starts):  # keep the device busy while this batch is read
                pending = launch(starts[i + 1])
            t_wait = time.perf_counter()
            cand = np.asarray(cand)  # waits for the device
            self.timings["decode"] += time.perf_counter() - t_wait
            idx = np.flatnonzero(cand)
            if idx.size == 0:
                continue
            padded = np.pad(idx, (0, _bucket(idx.size, 16) - idx.size), mode="edge")
            sel = np.asarray(_take(low, jnp.asarray(padded, jnp.int32)))[:idx.size]
            stab, box, _ = stability_and_boxes(sel, crop_hw, *cuts[[2, 0, 1]])
            keep = np.ones(idx.size, bool)
            if self.stability_score_thresh > 0:
                keep &= stab >= np.float32(self.stability_score_thresh)
            logits.append(sel[keep])
            ious.append(np.asarray(iou)[idx[keep]])
            stabs.append(stab[keep])
            boxes.append(box[keep])
            pts.append(points[s + idx[keep] // per_point])
        if not logits:
            return []
        logits, ious, stabs = np.concatenate(logits), np.concatenate(ious), np.concatenate(stabs)
        boxes, pts = np.concatenate(boxes), np.concatenate(pts)
        # Masks at a crop's inner edge are the crop's fault: the official drops them.
        keep = ~self._near_crop_edge(boxes, crop_box, orig_hw)
        logits, ious, stabs, boxes, pts = (a[keep] for a in (logits, ious, stabs, boxes, pts))
        if len(boxes) == 0:
            return []

        # Duplicates within the crop: NMS by predicted IoU.
        kept = self._nms(boxes, ious, self.box_nms_thresh)
        # The survivors' masks at the crop's size, kept as their boxes' pixels.
        cells = CellMasks(logits[kept], crop_hw, cuts[2:], band_stats=False)
        offset = np.array([x0, y0, x0, y0])
        return [{"pixels": cells.mask(i, 0, boxes[k]), "box": boxes[k] + offset,
                 "iou": ious[k], "stability": stabs[k], "point": pts[k] + np.float32([x0, y0]),
                 "crop_box": crop_box}
                for i, k in enumerate(kept)]

    @staticmethod
    def _near_crop_edge(boxes, crop_box, orig_hw) -> np.ndarray:
        k = len(boxes)
        padded = np.zeros((_bucket(k), 4), np.int64)
        padded[:k] = boxes
        near = M.near_crop_edge(jnp.asarray(padded, jnp.int32), tuple(crop_box),
                                (0, 0, orig_hw[1], orig_hw[0]))
        return np.asarray(near)[:k]

    @staticmethod
    def postprocess_small_regions(mask_data: dict, min_area: int, nms_thresh: float) -> dict:
        """Official `postprocess_small_regions` (which SAM 2's `generate` does not call):
        holes and islands below `min_area` removed from full-size masks, then NMS preferring
        unchanged masks. See `samv2_jax.automatic.small_regions.postprocess_small_regions`."""
        from samv2_jax.automatic.small_regions import postprocess_small_regions

        return postprocess_small_regions(mask_data, min_area, nms_thresh)

    @staticmethod
    def _nms(boxes, scores, iou_threshold) -> np.ndarray:
        """Indices kept by greedy NMS, in visiting (descending score) order."""
        k = len(boxes)
        size = _bucket(k)
        pad = size - k
        b = np.concatenate([boxes, np.zeros((pad, 4), boxes.dtype)]).astype(np.float32)
        s = np.concatenate([scores, np.zeros(pad, np.float32)]).astype(np.float32)
        valid = np.arange(size) < k
        order, kept = M.nms(jnp.asarray(b), jnp.asarray(s), jnp.asarray(valid),
                            float(iou_threshold))
        order, kept = np.asarray(order), np.asarray(kept)
        return order[kept]

    def _nms_across_crops(self, records: list[dict]) -> list[dict]:
        """Official: NMS over all crops' masks with score 1 / crop area (smaller crops win)."""
        boxes = np.stack([r["box"] for r in records])
        areas = np.array([(r["crop_box"][2] - r["crop_box"][0])
                          * (r["crop_box"][3] - r["crop_box"][1]) for r in records])
        scores = (1.0 / areas.astype(np.float32)).astype(np.float32)
        return [records[i] for i in self._nms(boxes, scores, self.crop_nms_thresh)]

    def _record(self, r: dict, orig_hw) -> dict[str, Any]:
        x0, y0, x1, y1 = (int(v) for v in r["box"])
        pixels = r["pixels"]
        if self.output_mode == "binary_mask":
            seg = np.zeros(orig_hw, bool)
            seg[y0:y0 + pixels.shape[0], x0:x0 + pixels.shape[1]] = pixels
        else:
            from samv2_jax.io import rle  # only the RLE modes need it

            seg = rle.encode(pixels, offset=(x0, y0), size=orig_hw)
            if self.output_mode == "coco_rle":
                seg = rle.compress(seg)
        box = np.float32([x0, y0, x1 - x0, y1 - y0])
        cx0, cy0, cx1, cy1 = r["crop_box"]
        return {
            "segmentation": seg,
            "area": int(np.count_nonzero(pixels)),
            "bbox": box.tolist(),
            "predicted_iou": float(r["iou"]),
            "point_coords": [np.asarray(r["point"], np.float32).tolist()],
            "stability_score": float(r["stability"]),
            "crop_box": np.float32([cx0, cy0, cx1 - cx0, cy1 - cy0]).tolist(),
        }
