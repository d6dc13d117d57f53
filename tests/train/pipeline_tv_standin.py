"""The torchvision pieces the official `training/dataset/transforms.py` imports, for a machine
without torchvision (see tests/official.py for the inference ones).

Each stand-in does what torchvision 0.2x does for the inputs the official transforms give it:
PIL images go through the same Pillow calls torchvision makes for PIL inputs; uint8 mask
tensors through torch as torchvision's tensor backend does (affine: an affine grid and
`grid_sample` nearest; resize: `interpolate` bilinear antialiased in float, then rounded).
`tests/train/test_pipeline_augment.py` checks them against direct implementations.
"""

from __future__ import annotations

import enum
import math
import sys
import types

import numpy as np
import torch
import torch.nn.functional as tF
from PIL import Image, ImageEnhance


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


_PIL_MODES = {InterpolationMode.NEAREST: Image.NEAREST, InterpolationMode.BILINEAR: Image.BILINEAR,
              InterpolationMode.BICUBIC: Image.BICUBIC}


def get_dimensions(img):
    if isinstance(img, torch.Tensor):
        c = 1 if img.ndim == 2 else img.shape[-3]
        return [c, img.shape[-2], img.shape[-1]]
    return [len(img.getbands()), img.height, img.width]


def hflip(img):
    if isinstance(img, torch.Tensor):
        return img.flip(-1)
    return img.transpose(Image.FLIP_LEFT_RIGHT)


def _inverse_affine(center, angle, translate, scale, shear):
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def affine(img, angle, translate, scale, shear, interpolation=InterpolationMode.NEAREST,
           fill=None, center=None):
    shear = list(shear) if isinstance(shear, (list, tuple)) else [shear, 0.0]
    if not isinstance(img, torch.Tensor):
        matrix = _inverse_affine([img.width * 0.5, img.height * 0.5], float(angle), translate,
                                 scale, shear)
        fill = tuple(int(v) for v in fill) if isinstance(fill, (list, tuple)) else int(fill or 0)
        return img.transform(img.size, Image.AFFINE, matrix, _PIL_MODES[interpolation],
                             fillcolor=fill)
    matrix = _inverse_affine([0.0, 0.0], float(angle), [float(t) for t in translate], scale,
                             shear)
    x = img[None].float() if img.ndim == 3 else img[None, None].float()
    h, w = x.shape[-2:]
    theta = torch.tensor(matrix, dtype=torch.float32).reshape(1, 2, 3)
    base = torch.empty(1, h, w, 3)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h).unsqueeze(-1))
    base[..., 2].fill_(1)
    grid = base.view(1, h * w, 3).bmm(theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h]))
    grid = grid.view(1, h, w, 2)
    ones = torch.ones_like(x[:, :1])
    out = tF.grid_sample(torch.cat([x, ones], 1), grid, mode=interpolation.value,
                         padding_mode="zeros", align_corners=False)
    out, inside = out[:, :-1], out[:, -1:].expand_as(out[:, :-1])
    out = torch.where(inside < 0.5, torch.tensor(float(fill or 0.0)), out)
    out = out[0] if img.ndim == 3 else out[0, 0]
    return torch.round(out).to(img.dtype) if not img.is_floating_point() else out


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    size = [int(s) for s in size]
    if not isinstance(img, torch.Tensor):
        if [img.height, img.width] == size:
            return img
        return img.resize((size[1], size[0]), _PIL_MODES[interpolation])
    if list(img.shape[-2:]) == size:
        return img
    x = img.float()
    y = tF.interpolate(x, size=size, mode=interpolation.value, align_corners=False,
                       antialias=antialias)
    return torch.round(y).to(img.dtype) if not img.is_floating_point() else y


def pad(img, padding, fill=0, padding_mode="constant"):
    raise NotImplementedError("pad is not used by the recipe's transforms")


def to_tensor(pic):
    arr = np.asarray(pic)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div(255)


def normalize(t, mean, std):
    mean = torch.as_tensor(mean, dtype=t.dtype)[:, None, None]
    std = torch.as_tensor(std, dtype=t.dtype)[:, None, None]
    return t.sub(mean).div(std)


def adjust_brightness(img, f):
    return ImageEnhance.Brightness(img).enhance(f)


def adjust_contrast(img, f):
    return ImageEnhance.Contrast(img).enhance(f)


def adjust_saturation(img, f):
    return ImageEnhance.Color(img).enhance(f)


def adjust_hue(img, f):
    h, s, v = img.convert("HSV").split()
    hue = np.array(h, dtype=np.uint8)
    hue += np.int32(f * 255).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert(img.mode)


def rgb_to_grayscale(img, num_output_channels=1):
    g = img.convert("L")
    if num_output_channels == 1:
        return g
    a = np.array(g, dtype=np.uint8)
    return Image.fromarray(np.dstack([a, a, a]), "RGB")


class Grayscale:
    def __init__(self, num_output_channels=1):
        self.num_output_channels = num_output_channels

    def __call__(self, img):
        return rgb_to_grayscale(img, self.num_output_channels)


class ColorJitter:
    @staticmethod
    def get_params(brightness, contrast, saturation, hue):
        order = torch.randperm(4)
        draw = lambda r: None if r is None else float(torch.empty(1).uniform_(r[0], r[1]))
        return order, draw(brightness), draw(contrast), draw(saturation), draw(hue)


class RandomAffine:
    @staticmethod
    def get_params(degrees, translate, scale_ranges, shears, img_size):
        angle = float(torch.empty(1).uniform_(float(degrees[0]), float(degrees[1])).item())
        assert translate is None and scale_ranges is None  # the recipe uses neither
        shear_x = shear_y = 0.0
        if shears is not None:
            shear_x = float(torch.empty(1).uniform_(shears[0], shears[1]).item())
            if len(shears) == 4:
                shear_y = float(torch.empty(1).uniform_(shears[2], shears[3]).item())
        return angle, (0, 0), 1.0, (shear_x, shear_y)


def install() -> None:
    """Register the stand-in modules (after tests/official.py's, whose pieces it keeps)."""
    import official

    official.install_torchvision_standin()
    tv = sys.modules["torchvision"]
    tvt = sys.modules["torchvision.transforms"]
    if getattr(tvt, "_training_standin", False):
        return
    fn = types.ModuleType("torchvision.transforms.functional")
    for name in ("get_dimensions", "hflip", "affine", "resize", "pad", "to_tensor", "normalize",
                 "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
                 "rgb_to_grayscale"):
        setattr(fn, name, globals()[name])
    fn.InterpolationMode = InterpolationMode
    v2 = types.ModuleType("torchvision.transforms.v2")
    v2fn = types.ModuleType("torchvision.transforms.v2.functional")
    v2.functional = v2fn
    tvt.functional, tvt.v2 = fn, v2
    tvt.InterpolationMode = InterpolationMode
    tvt.ColorJitter, tvt.RandomAffine, tvt.Grayscale = ColorJitter, RandomAffine, Grayscale
    tvt._training_standin = True
    datasets = types.ModuleType("torchvision.datasets")
    vision = types.ModuleType("torchvision.datasets.vision")
    vision.VisionDataset = type("VisionDataset", (), {})
    datasets.vision = vision
    tv.datasets = datasets
    sys.modules.update({"torchvision.transforms.functional": fn,
                        "torchvision.transforms.v2": v2,
                        "torchvision.transforms.v2.functional": v2fn,
                        "torchvision.datasets": datasets,
                        "torchvision.datasets.vision": vision})
