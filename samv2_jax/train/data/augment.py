"""The official training augmentations (`training/dataset/transforms.py`), with the parameters of
the sam2.1 MOSE fine-tuning recipe as defaults.

In order, per clip: horizontal flip of every frame, one random affine for every frame (rotation
up to 25 degrees, x-shear up to 20, the frame filled with the official mean colour; skipped when
an object's first-frame mask would vanish), resize to a square, one colour jitter for the clip,
random grayscale, then a colour jitter per frame. ImageNet normalisation happens on the device
(`normalize_images`), so clips travel as uint8.

Randomness and pixels are kept apart: `draw_params(rng, ...)` draws everything a clip's
augmentation needs from a numpy Generator, `apply_params` applies it. Frames are PIL images, as
in the official pipeline, and go through the same Pillow operations torchvision calls for PIL
inputs; masks follow torchvision's tensor path (nearest-neighbour affine by `grid_sample`
arithmetic in float32, antialiased bilinear resize and rounding), written here in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Jitter:
    """torchvision `ColorJitter` strengths: factors drawn from [1 - x, 1 + x] (hue: [-h, h])."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float | None = None

    def ranges(self):
        def around_one(x):
            return (max(0.0, 1.0 - x), 1.0 + x)

        hue = None if self.hue is None else (-self.hue, self.hue)
        return (around_one(self.brightness), around_one(self.contrast),
                around_one(self.saturation), hue)


@dataclass(frozen=True)
class AugmentConfig:
    """The official `vos.train_transforms` of `sam2.1_hiera_b+_MOSE_finetune.yaml`."""

    hflip_prob: float = 0.5
    affine_degrees: float = 25.0
    affine_shear: float = 20.0
    affine_fill: tuple[int, int, int] = (123, 116, 103)
    affine_interpolation: str = "bilinear"
    clip_jitter: Jitter = field(default_factory=lambda: Jitter(0.1, 0.03, 0.03))
    grayscale_prob: float = 0.05
    frame_jitter: Jitter = field(default_factory=lambda: Jitter(0.1, 0.05, 0.05))

    def __post_init__(self):
        if self.affine_interpolation not in ("bilinear", "bicubic"):
            raise ValueError("affine_interpolation must be 'bilinear' or 'bicubic', got "
                             f"{self.affine_interpolation!r}")
        for name in ("hflip_prob", "grayscale_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


# Only the square resize (validation and evaluation clips).
NO_AUGMENT = AugmentConfig(hflip_prob=0.0, affine_degrees=0.0, affine_shear=0.0,
                           clip_jitter=Jitter(), grayscale_prob=0.0, frame_jitter=Jitter())


def is_identity(cfg: AugmentConfig) -> bool:
    return cfg == NO_AUGMENT


# --- parameters -------------------------------------------------------------------------------


def _draw_jitter(rng: np.random.Generator, jitter: Jitter):
    """`ColorJitter.get_params`: a random order of the four operations and their factors."""
    order = tuple(int(i) for i in rng.permutation(4))
    factors = [None if r is None else float(rng.uniform(*r)) for r in jitter.ranges()]
    return (order, *factors)


def draw_params(rng: np.random.Generator, cfg: AugmentConfig, num_frames: int) -> dict:
    """Everything random about one clip's augmentation."""
    shear = float(rng.uniform(-cfg.affine_shear, cfg.affine_shear)) if cfg.affine_shear else 0.0
    return {
        "hflip": bool(rng.random() < cfg.hflip_prob),
        "affine": (float(rng.uniform(-cfg.affine_degrees, cfg.affine_degrees)), shear),
        "clip_jitter": _draw_jitter(rng, cfg.clip_jitter),
        "grayscale": bool(rng.random() < cfg.grayscale_prob),
        "frame_jitter": [_draw_jitter(rng, cfg.frame_jitter) for _ in range(num_frames)],
    }


# --- geometry ---------------------------------------------------------------------------------


def inverse_affine_matrix(center, angle: float, shear: tuple[float, float]) -> list[float]:
    """Output-to-input pixel map of a rotation by `angle` and shear (degrees) about `center`,
    as torchvision's `_get_inverse_affine_matrix` with no translation and unit scale."""
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * -cx + m[1] * -cy
    m[5] += m[3] * -cx + m[4] * -cy
    m[2] += cx
    m[5] += cy
    return m


def _affine_sources(h: int, w: int, angle: float, shear) -> tuple[np.ndarray, np.ndarray]:
    """Nearest source pixel (row, col) of every output pixel, -1 where it falls outside: the
    float32 grid torchvision builds for a tensor (`_gen_affine_grid`, then `grid_sample`'s
    unnormalisation with align_corners=False and round-half-even)."""
    theta = np.asarray(inverse_affine_matrix((0.0, 0.0), angle, shear), np.float32).reshape(2, 3)
    half = np.asarray([0.5 * w, 0.5 * h], np.float32)
    rt = (theta.T / half).astype(np.float32)  # [3, 2]
    xs = (np.arange(w, dtype=np.float32) - np.float32(w * 0.5 - 0.5))[None, :]
    ys = (np.arange(h, dtype=np.float32) - np.float32(h * 0.5 - 0.5))[:, None]
    out = []
    for j, size in ((0, w), (1, h)):
        g = (xs * rt[0, j] + ys * rt[1, j]).astype(np.float32) + rt[2, j]
        g = g.astype(np.float32)
        src = ((g + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)
        idx = np.rint(src.astype(np.float32)).astype(np.int64)
        out.append(np.where((idx >= 0) & (idx < size), idx, -1))
    col, row = out
    outside = (row < 0) | (col < 0)
    return np.where(outside, -1, row), np.where(outside, -1, col)


def affine_mask(mask: np.ndarray, angle: float, shear) -> np.ndarray:
    """[H, W] uint8 mask under the affine map, nearest neighbour, zero outside."""
    h, w = mask.shape
    row, col = _affine_sources(h, w, angle, shear)
    out = mask[np.maximum(row, 0), np.maximum(col, 0)]
    return np.where(row >= 0, out, 0).astype(mask.dtype)


def affine_image(img, angle: float, shear, fill, interpolation: str):
    """The PIL path of torchvision's `F.affine` (centre at (w/2, h/2))."""
    from PIL import Image

    w, h = img.size
    matrix = inverse_affine_matrix((w * 0.5, h * 0.5), angle, shear)
    resample = Image.BILINEAR if interpolation == "bilinear" else Image.BICUBIC
    return img.transform((w, h), Image.AFFINE, matrix, resample,
                         fillcolor=tuple(int(v) for v in fill))


def _aa_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """[out, k] source indices and weights of antialiased bilinear (triangle) resampling with
    align_corners=False, as torch's `interpolate(..., antialias=True)` and PIL compute them."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    k = int((xmax - xmin).max())
    j = np.arange(k)[None, :]
    taps = xmin[:, None] + j
    x = (taps - centers[:, None] + 0.5) * invscale
    wts = np.clip(1.0 - np.abs(x), 0.0, None)
    wts = np.where(taps < xmax[:, None], wts, 0.0)
    wts = wts / wts.sum(axis=1, keepdims=True)
    return np.minimum(taps, in_size - 1), wts


def resize_mask_values(masks: np.ndarray, size: int) -> np.ndarray:
    """[N, H, W] 0/1 masks resampled to [N, size, size] float64 before rounding (along the
    width first, as torch; one filter tap at a time, so no [.., taps] temporary)."""
    rows, wr = _aa_weights(masks.shape[1], size)
    cols, wc = _aa_weights(masks.shape[2], size)
    m = masks.astype(np.float64)
    tmp = np.zeros((m.shape[0], m.shape[1], size))
    for j in range(cols.shape[1]):
        tmp += m[:, :, cols[:, j]] * wc[:, j]
    out = np.zeros((m.shape[0], size, size))
    for j in range(rows.shape[1]):
        out += tmp[:, rows[:, j], :] * wr[:, j, None]
    return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """[N, H, W] 0/1 masks to [N, size, size] bool: torchvision's resize of a uint8 tensor
    (antialiased bilinear, rounded half to even), computed by Pillow's resampler on float
    images, which uses the same triangle filter (see `resize_mask_values`). Where exactly
    half the filter's weight lies on the object (value 0.5), float rounding decides, here as
    in torch; such ties occur when shrinking by a ratio of small integers."""
    from PIL import Image

    n, h, w = masks.shape
    if (h, w) == (size, size):
        return masks.astype(bool)
    out = np.empty((n, size, size), bool)
    for i in range(n):
        im = Image.fromarray(np.ascontiguousarray(masks[i], dtype=np.float32), mode="F")
        out[i] = np.rint(np.asarray(im.resize((size, size), Image.BILINEAR))) >= 1
    return out


# --- colour -----------------------------------------------------------------------------------


def adjust_hue(img, factor: float):
    """torchvision's PIL `adjust_hue`: shift the HSV hue channel, wrapping around."""
    from PIL import Image

    if not -0.5 <= factor <= 0.5:
        raise ValueError(f"hue factor {factor} is outside [-0.5, 0.5]")
    h, s, v = img.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.int32(factor * 255).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert(img.mode)


def color_jitter(img, params):
    """One `ColorJitter` draw applied to a PIL image, in the drawn order."""
    from PIL import ImageEnhance

    order, brightness, contrast, saturation, hue = params
    for op in order:
        if op == 0 and brightness is not None:
            img = ImageEnhance.Brightness(img).enhance(brightness)
        elif op == 1 and contrast is not None:
            img = ImageEnhance.Contrast(img).enhance(contrast)
        elif op == 2 and saturation is not None:
            img = ImageEnhance.Color(img).enhance(saturation)
        elif op == 3 and hue is not None:
            img = adjust_hue(img, hue)
    return img


def to_grayscale(img):
    from PIL import Image

    g = np.array(img.convert("L"), dtype=np.uint8)
    return Image.fromarray(np.dstack([g, g, g]), "RGB")


# --- the whole recipe -------------------------------------------------------------------------


def apply_params(frames: list, masks: np.ndarray, params: dict | None, cfg: AugmentConfig,
                 image_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Augment one clip.

    frames: T PIL RGB images of one size; masks: [T, O, H, W] 0/1 (uint8 or bool).
    Returns uint8 frames [T, S, S, 3], bool masks [T, O, S, S] and whether the affine was
    applied (False when it would have emptied a first-frame mask, as the official skips it).
    """
    from PIL import Image

    masks = np.asarray(masks, dtype=np.uint8)
    t, o = masks.shape[:2]
    affined = False
    if params is not None:
        if params["hflip"]:
            frames = [f.transpose(Image.FLIP_LEFT_RIGHT) for f in frames]
            masks = masks[..., ::-1]
        angle, shear_x = params["affine"]
        shear = (shear_x, 0.0)
        if cfg.affine_degrees or cfg.affine_shear:
            h, w = masks.shape[-2:]
            row, col = _affine_sources(h, w, angle, shear)
            inside = row >= 0
            moved = np.where(inside, masks[..., np.maximum(row, 0), np.maximum(col, 0)], 0)
            if o == 0 or all(moved[0, k].any() for k in range(o)):
                masks = moved.astype(np.uint8)
                frames = [affine_image(f, angle, shear, cfg.affine_fill,
                                       cfg.affine_interpolation) for f in frames]
                affined = True
    frames = [f if f.size == (image_size, image_size)
              else f.resize((image_size, image_size), Image.BILINEAR) for f in frames]
    h, w = masks.shape[-2:]
    out_masks = resize_masks(masks.reshape(t * o, h, w), image_size).reshape(
        t, o, image_size, image_size)
    if params is not None:
        frames = [color_jitter(f, params["clip_jitter"]) for f in frames]
        if params["grayscale"]:
            frames = [to_grayscale(f) for f in frames]
        frames = [color_jitter(f, p) for f, p in zip(frames, params["frame_jitter"])]
    images = np.stack([np.asarray(f.convert("RGB"), dtype=np.uint8) for f in frames])
    return images, out_masks, affined


def normalize_images(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 [..., 3] -> float32 ImageNet-normalised, as the official `ToTensorAPI` +
    `NormalizeAPI` (x / 255, then (x - mean) / std). Works on numpy and jax arrays."""
    if isinstance(images, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    x = images.astype(xp.float32) / xp.float32(255)
    return (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)
