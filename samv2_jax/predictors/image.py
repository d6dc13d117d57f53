"""Image segmentation: a functional core (`encode_image`, `decode_prompts`, `postprocess`)
and `SAM2ImagePredictor`, the official class's API (same methods, arguments, numpy outputs)
as thin host-side bookkeeping over that core."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.config import SAM2Config
from samv2_jax.modeling.image_encoder import no_memory_features
from samv2_jax.modeling.mask_decoder import mask_decoder
from samv2_jax.modeling.mask_postprocess import fill_holes_and_remove_sprinkles
from samv2_jax.modeling.prompt_encoder import dense_pe, prompt_encoder
from samv2_jax.modeling.transforms import postprocess_masks, preprocess_image
from samv2_jax.predictors.aot import Program
from samv2_jax.predictors.inputs import as_rgb_uint8, check_labels, transform_coords
from samv2_jax.predictors.programs import encode_image

# --- functional core ------------------------------------------------------------------------


@Program
@functools.partial(jax.jit, static_argnames=("image_size",))
def _preprocess(image_uint8, image_size: int):
    return preprocess_image(image_uint8, image_size)


@Program
@functools.partial(jax.jit, static_argnames=("cfg", "multimask_output", "training"))
def decode_prompts(params, cfg: SAM2Config, feats, coords, labels, mask_input=None, *,
                   multimask_output: bool = True, training: bool = False):
    """Prompts for one image -> (low-res mask logits [B, M, 4E, 4E], IoU predictions [B, M]).

    Official counterpart: `SAM2ImagePredictor._predict` up to its post-processing.
    feats: one image's `encode_image` output (batch 1). coords [B, N, 2] in model-input pixels
    (box corners first, labels 2 and 3), labels [B, N], or both None; mask_input
    [B or 1, 4E, 4E] logits or None.
    """
    pe = params["sam_prompt_encoder"]
    sparse, dense = prompt_encoder(
        pe, cfg, points=None if coords is None else (coords, labels), boxes=None,
        masks=mask_input)
    masks, ious, _, _ = mask_decoder(
        params["sam_mask_decoder"], cfg.decoder,
        no_memory_features(params, cfg, feats["image_embed"]), dense_pe(pe, cfg), sparse, dense,
        multimask_output=multimask_output, high_res_features=feats["high_res_feats"],
        training=training)
    return masks, ious


@Program
@functools.partial(jax.jit, static_argnames=(
    "orig_hw", "mask_threshold", "max_hole_area", "max_sprinkle_area", "return_logits"))
def postprocess(low_res_masks, orig_hw: tuple[int, int], mask_threshold: float = 0.0,
                max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0,
                return_logits: bool = False):
    """Low-res logits -> (masks at the original size, low-res logits clamped to [-32, 32])."""
    masks = fill_holes_and_remove_sprinkles(low_res_masks, mask_threshold, max_hole_area,
                                            max_sprinkle_area)
    masks = postprocess_masks(masks, orig_hw)
    if not return_logits:
        masks = (masks > mask_threshold).astype(jnp.float32)
    return masks, jnp.clip(low_res_masks, -32.0, 32.0)


# --- the official-style predictor -----------------------------------------------------------


class SAM2ImagePredictor:
    """Embed an image once, then predict masks for any number of prompts.

    Mirrors `sam2.sam2_image_predictor.SAM2ImagePredictor`; outputs are numpy arrays with the
    official shapes and dtypes.
    """

    def __init__(self, sam_model, mask_threshold: float = 0.0, max_hole_area: float = 0.0,
                 max_sprinkle_area: float = 0.0, **kwargs: Any) -> None:
        if not hasattr(sam_model, "config") or not hasattr(sam_model, "params"):
            raise TypeError(
                "SAM2ImagePredictor needs a samv2_jax Model (from samv2_jax.load(...)), got "
                f"{type(sam_model).__name__}")
        self.model = sam_model
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self.reset_predictor()

    @property
    def config(self) -> SAM2Config:
        return self.model.config

    # -- images --

    def reset_predictor(self) -> None:
        self._is_image_set = False
        self._features = None
        self._orig_hw = None
        self._is_batch = False

    def _embed(self, images: Sequence[np.ndarray]) -> None:
        size = self.config.image_size
        batch = jnp.stack([_preprocess(jnp.asarray(im), size) for im in images])
        self._features = encode_image(self.model.params, self.config, batch)
        self._is_image_set = True

    def set_image(self, image) -> None:
        """Embed one image: HWC uint8 RGB numpy array or PIL image (grayscale/RGBA converted)."""
        self.reset_predictor()
        image = as_rgb_uint8(image)
        self._orig_hw = [tuple(image.shape[:2])]
        self._embed([image])

    def set_image_batch(self, image_list) -> None:
        """Embed a list of images for `predict_batch`."""
        self.reset_predictor()
        if not isinstance(image_list, (list, tuple)) or len(image_list) == 0:
            raise TypeError("set_image_batch expects a non-empty list of HWC uint8 RGB images")
        images = [as_rgb_uint8(im) for im in image_list]
        self._orig_hw = [tuple(im.shape[:2]) for im in images]
        self._embed(images)
        self._is_batch = True

    def get_image_embedding(self) -> np.ndarray:
        """The stride-16 embedding, [B, C, E, E] like the official (channels first)."""
        self._require_image("to get an embedding")
        embed = no_memory_features(self.model.params, self.config, self._features["image_embed"])
        return np.asarray(embed).transpose(0, 3, 1, 2)

    # -- prompts --

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True):
        """-> (masks [C, H, W], iou_predictions [C], low_res_logits [C, 4E, 4E]); with a batch of
        B prompt sets, each gains a leading B axis. Masks are float32 0/1 unless return_logits."""
        self._require_image("before mask prediction")
        return self._predict_one(0, point_coords, point_labels, box, mask_input,
                                 multimask_output, return_logits, normalize_coords)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True,
                      return_logits: bool = False, normalize_coords: bool = True):
        """One prompt set per image of `set_image_batch` -> lists of masks, ious, low-res logits."""
        if not self._is_batch:
            raise RuntimeError("predict_batch needs images set with set_image_batch(...)")
        self._require_image("before mask prediction")
        n = len(self._orig_hw)
        for name, value in (("point_coords_batch", point_coords_batch),
                            ("point_labels_batch", point_labels_batch),
                            ("box_batch", box_batch), ("mask_input_batch", mask_input_batch)):
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} images")
        outs = [self._predict_one(
            i,
            None if point_coords_batch is None else point_coords_batch[i],
            None if point_labels_batch is None else point_labels_batch[i],
            None if box_batch is None else box_batch[i],
            None if mask_input_batch is None else mask_input_batch[i],
            multimask_output, return_logits, normalize_coords) for i in range(n)]
        return [o[0] for o in outs], [o[1] for o in outs], [o[2] for o in outs]

    def prepare_predict(self, image_hw: tuple[int, int], point_coords=None, point_labels=None,
                        box=None, multimask_output: bool = True,
                        return_logits: bool = False) -> None:
        """Compile (or load) what `predict` will run for prompts of these shapes on an image of
        size `image_hw`, on stand-in features: an application calls it on a second thread
        while `set_image` encodes, so the decoder's compilation overlaps the encoder's (XLA
        compiles without the GIL). Prompts are checked as `predict` checks them; nothing
        else changes."""
        cfg, params = self.config, self.model.params
        coords, labels = _prepare_prompts(point_coords, point_labels, box, image_hw,
                                          cfg.image_size, True)
        jax.block_until_ready(self._decode(_stand_in_features(params, cfg), coords, labels,
                                           None, image_hw, multimask_output, return_logits))

    def _decode(self, feats, coords, labels, mask, orig_hw, multimask_output, return_logits):
        """decode_prompts then postprocess, the two compiled programs `predict` runs:
        (masks, ious, low_res) as device arrays."""
        cfg = self.config
        low_res, ious = decode_prompts(
            self.model.params, cfg, feats,
            None if coords is None else jnp.asarray(coords),
            None if labels is None else jnp.asarray(labels),
            None if mask is None else jnp.asarray(mask),
            multimask_output=bool(multimask_output))
        masks, low_res = postprocess(
            low_res, tuple(int(v) for v in orig_hw), self.mask_threshold, self.max_hole_area,
            self.max_sprinkle_area, bool(return_logits))
        return masks, ious, low_res

    def _require_image(self, what: str) -> None:
        if not self._is_image_set:
            raise RuntimeError(f"An image must be set with .set_image(...) {what}.")

    def _predict_one(self, img_idx, point_coords, point_labels, box, mask_input,
                     multimask_output, return_logits, normalize_coords):
        cfg = self.config
        orig_hw = self._orig_hw[img_idx]
        coords, labels = _prepare_prompts(point_coords, point_labels, box, orig_hw,
                                          cfg.image_size, normalize_coords)
        mask = _prepare_mask_input(mask_input, cfg.low_res_mask_size)
        if mask is not None and coords is not None and mask.shape[0] not in (1, coords.shape[0]):
            raise ValueError(f"mask_input has {mask.shape[0]} masks for {coords.shape[0]} "
                             "prompt sets; give one mask, or one per prompt set")
        feats = self._features
        if self._is_batch:
            feats = jax.tree.map(lambda f: f[img_idx:img_idx + 1], feats)
        masks, ious, low_res = (np.asarray(a) for a in self._decode(
            feats, coords, labels, mask, orig_hw, multimask_output, return_logits))
        squeeze = (lambda a: a[0]) if masks.shape[0] == 1 else (lambda a: a)
        return squeeze(masks), squeeze(ious), squeeze(low_res)


def _stand_in_features(params, cfg: SAM2Config):
    """Zeros shaped, typed and placed as `encode_image`'s output for one image (from the
    config and the parameters' shapes, without tracing the encoder)."""
    e = cfg.image_size // 16
    dtype = params["image_encoder"]["trunk"]["patch_embed"]["proj"]["weight"].dtype
    leaf = jax.tree.leaves(params)[0]
    # Placed like the real output: on the params' device when they were put there
    # (committed), else left to JAX's default; the compiled-program caches key on it.
    sharding = leaf.sharding if isinstance(leaf, jax.Array) and leaf.committed else None
    dec = params["sam_mask_decoder"]
    if cfg.decoder.use_high_res_features:
        widths = (dec["conv_s0"]["weight"].shape[-1], dec["conv_s1"]["weight"].shape[-1])
    else:
        widths = (cfg.neck.d_model, cfg.neck.d_model)
    zeros = lambda *shape: (jnp.zeros(shape, dtype) if sharding is None
                            else jax.device_put(np.zeros(shape, dtype), sharding))
    return {"image_embed": zeros(1, e, e, cfg.neck.d_model),
            "image_pos": zeros(1, e, e, cfg.neck.d_model),
            "high_res_feats": (zeros(1, 4 * e, 4 * e, widths[0]),
                               zeros(1, 2 * e, 2 * e, widths[1]))}


def _prepare_prompts(point_coords, point_labels, box, orig_hw, image_size, normalize_coords):
    """Validate user prompts and map them to model-input pixels; box corners go first."""
    coords = labels = None
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = foreground, "
                             "0 = background)")
        coords = np.asarray(point_coords, dtype=np.float32)
        labels = np.asarray(point_labels)
        if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be Nx2 (x, y) or BxNx2, got shape {coords.shape}")
        if labels.shape != coords.shape[:-1]:
            raise ValueError(f"point_labels must have one label per point: got {labels.shape} "
                             f"labels for points of shape {coords.shape}")
        check_labels(labels)
        labels = labels.astype(np.int32)
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        coords = transform_coords(coords, orig_hw, image_size, normalize_coords)
    elif point_labels is not None:
        raise ValueError("point_labels were given without point_coords")
    if box is not None:
        box = np.asarray(box, dtype=np.float32)
        if box.shape[-1] != 4 or box.ndim not in (1, 2):
            raise ValueError("box must be 4 numbers (x0, y0, x1, y1) or Bx4, got shape "
                             f"{box.shape}")
        corners = transform_coords(box.reshape(-1, 2, 2), orig_hw, image_size, normalize_coords)
        corner_labels = np.tile(np.array([[2, 3]], np.int32), (corners.shape[0], 1))
        if coords is None:
            coords, labels = corners, corner_labels
        else:
            if corners.shape[0] != coords.shape[0]:
                raise ValueError(f"{corners.shape[0]} boxes but {coords.shape[0]} point sets: "
                                 "give one box per point set")
            coords = np.concatenate([corners, coords], axis=1)
            labels = np.concatenate([corner_labels, labels], axis=1)
    return coords, labels


def _prepare_mask_input(mask_input, size):
    if mask_input is None:
        return None
    mask = np.asarray(mask_input, dtype=np.float32)
    if mask.ndim == 3:
        mask = mask[None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != (size, size):
        raise ValueError(
            f"mask_input must be 1x{size}x{size} (or Bx1x{size}x{size}) low-res logits, such as "
            f"one of the low-res masks a previous predict() returned; got shape {mask.shape}")
    return mask[:, 0]
