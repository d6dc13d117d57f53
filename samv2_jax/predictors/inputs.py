"""User inputs of every predictor, checked and normalised in one place: images, clicks, boxes,
mask prompts, and the mapping of coordinates into the model's input frame.

Errors name what was wrong and what to pass instead; nothing here touches files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from samv2_jax.modeling.transforms import resize_bilinear


class Prompt(NamedTuple):
    """Prompts for one object on one frame, in the frame's own pixels: clicks (`points` [N, 2]
    with `labels` [N], 1 foreground / 0 background), a `box` (x0, y0, x1, y1), or a `mask`
    [H, W] (used alone)."""

    points: Any = None
    labels: Any = None
    box: Any = None
    mask: Any = None


# 1 foreground, 0 background, 2/3 box corners, -1 padding (the official's label codes).
POINT_LABELS = (-1, 0, 1, 2, 3)
BOX_LABELS = (2, 3)


def as_points(points, labels):
    """Clicks as (coords [N, 2] float32, labels [N] int32); both None -> empty arrays.

    Accepts [N, 2] / [N] or the official batched [1, N, 2] / [1, N]."""
    if (points is None) != (labels is None):
        raise ValueError("points and labels must be provided together")
    if points is None:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.int32)
    pts = np.asarray(points, np.float32)
    lab = np.asarray(labels)
    if pts.ndim == 3 and pts.shape[0] == 1:
        pts = pts[0]
    if lab.ndim == 2 and lab.shape[0] == 1:
        lab = lab[0]
    if pts.ndim != 2 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape [N, 2] (x, y), got {pts.shape}")
    if lab.ndim != 1 or lab.shape[0] != pts.shape[0]:
        raise ValueError(f"labels must have shape [N] matching {pts.shape[0]} points, "
                         f"got {lab.shape}")
    check_labels(lab)
    if not np.all(np.isfinite(pts)):
        raise ValueError("point coordinates must be finite numbers")
    return pts, lab.astype(np.int32)


def check_labels(labels) -> None:
    labels = np.asarray(labels)
    fractional = labels.size and not np.issubdtype(labels.dtype, np.integer)
    if fractional and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError("point labels must be integers (-1, 0, 1, 2 or 3)")
    bad = sorted(set(np.unique(labels).tolist()) - set(POINT_LABELS))
    if bad:
        raise ValueError(f"unknown point labels {bad}: point labels must be 1 (foreground), "
                         "0 (background), 2/3 (box corners) or -1 (padding)")


def box_corners(box) -> np.ndarray:
    """A box (x0, y0, x1, y1) -> its two corners [2, 2], the official's box-as-points."""
    b = np.asarray(box, np.float32)
    if b.size != 4:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("box coordinates must be finite numbers")
    return b.reshape(2, 2)


def with_box(points, labels, box):
    """Clicks with a box's corners in front (labels 2 and 3), as the official prompts take
    them; `box` None leaves the clicks as they are."""
    if box is None:
        return points, labels
    return (np.concatenate([box_corners(box), points], 0),
            np.concatenate([np.array(BOX_LABELS, np.int32), labels], 0))


def transform_coords(coords, orig_hw: Sequence[int], image_size: int, normalize: bool = True):
    """(x, y) coordinates [..., 2] -> the model's input frame [0, image_size] (official
    `SAM2Transforms.transform_coords`). numpy in, numpy out (checked finite); jax arrays
    (also traced ones) are mapped the same way.

    With `normalize`, coords are pixels of the original image (divided by its width and
    height first); otherwise they are already in [0, 1]."""
    is_jax = isinstance(coords, jax.Array)
    xp = jnp if is_jax else np
    coords = xp.asarray(coords)
    if not xp.issubdtype(coords.dtype, xp.floating):
        coords = coords.astype(xp.float32)
    if coords.shape[-1:] != (2,):
        raise ValueError(f"coordinates must have a trailing axis of size 2, got {coords.shape}")
    if not is_jax and not np.all(np.isfinite(coords)):
        raise ValueError("prompt coordinates contain NaN or infinity")
    if normalize:
        h, w = orig_hw
        coords = xp.stack([coords[..., 0] / w, coords[..., 1] / h], axis=-1)
    return coords * image_size


def mask_prompt_to_input(mask, image_size: int):
    """A 2-D mask prompt of any size -> [S, S] 0/1 float32 at the model's input size
    (antialiased bilinear resize, then thresholded at 0.5, as the official does)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {m.shape}")
    out = jnp.asarray(m.astype(bool).astype(np.float32))
    if m.shape != (image_size, image_size):
        out = resize_bilinear(out[None, :, :, None], (image_size, image_size), antialias=True)
        out = (out[0, :, :, 0] >= 0.5).astype(jnp.float32)
    return out


def _pil_to_rgb(img) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        # PIL would clip 16-bit values at 255 (a nearly white image); map the full range.
        a = np.asarray(img).astype(np.uint32)
        gray = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def as_rgb_uint8(image) -> np.ndarray:
    """Validate an input image on the host and return it as a uint8 numpy array [H, W, 3].

    Accepts HxWx3 uint8 (returned unchanged), a PIL image of any mode (converted to RGB;
    16-bit grayscale is rescaled to 0..255 rather than clipped), uint8 grayscale HxW or
    HxWx1 (replicated to 3 channels) and uint8 RGBA HxWx4 (alpha dropped).
    """
    # A PIL image is recognised without importing PIL for numpy-only callers.
    if type(image).__module__.startswith("PIL.") and hasattr(image, "mode"):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image is empty (size {image.size}); pass a non-empty image")
        return _pil_to_rgb(image)

    if isinstance(image, (str, bytes, os.PathLike)):
        raise TypeError(
            f"got a path-like {type(image).__name__} ({image!r}), not an image; load it "
            "first, e.g. np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if isinstance(image, jax.Array):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"expected a numpy array [H, W, 3] (uint8 RGB) or a PIL.Image, got "
            f"{type(image).__name__}; load or convert it first, e.g. with PIL.Image.open"
        )
    if image.dtype != np.uint8:
        raise TypeError(
            f"expected dtype uint8, got {image.dtype}; convert to uint8 RGB in [0, 255] "
            "first (e.g. (img * 255).round().astype(np.uint8) for floats in [0, 1])"
        )
    if image.ndim not in (2, 3):
        raise ValueError(
            f"expected an HWC image [H, W, 3] (or grayscale [H, W]), got {image.ndim} dims "
            f"with shape {image.shape}; pass one image at a time"
        )
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape}); pass a non-empty image")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    c = image.shape[2]
    if c == 3:
        return image
    if c == 1:
        return np.repeat(image, 3, axis=2)
    if c == 4:
        return np.ascontiguousarray(image[:, :, :3])
    hint = ""
    if image.shape[0] in (1, 3, 4):
        hint = " It looks channels-first (CHW); transpose to HWC with img.transpose(1, 2, 0)."
    raise ValueError(
        f"expected an HWC image with 1, 3 or 4 channels in the last axis, got shape "
        f"{image.shape} ({c} channels).{hint}"
    )
