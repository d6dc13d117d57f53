"""The oracle: the official SAM 2 (PyPI `sam2==1.1.0`) built with every tensor re-drawn.

There are no real checkpoints here, so each test builds the official model, re-draws every
parameter and buffer at random (no zero or identity init may hide a code path), and compares.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

_CONFIG_FILES = {
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
MODEL_NAMES = tuple(_CONFIG_FILES)


def install_torchvision_standin() -> None:
    """Give `sam2.utils.transforms` the three torchvision transforms it imports.

    torchvision has no CPU wheel here. These stand-ins do what torchvision does for a
    tensor / HWC uint8 input; `tests/test_official_standin.py` checks them against torch.
    """
    if "torchvision.transforms" in sys.modules:
        return
    try:  # a real torchvision wins
        importlib.import_module("torchvision.transforms")
        return
    except Exception:
        pass

    class ToTensor:
        def __call__(self, pic):
            arr = np.asarray(pic)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
            return t.float().div(255) if t.dtype == torch.uint8 else t.float()

    class Resize(torch.nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = [int(s) for s in size]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)
            return y[0]

    class Normalize(torch.nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = [float(m) for m in mean]
            self.std = [float(s) for s in std]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
            std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
            return (x - mean) / std

    tv = types.ModuleType("torchvision")
    tvt = types.ModuleType("torchvision.transforms")
    tvt.ToTensor, tvt.Resize, tvt.Normalize = ToTensor, Resize, Normalize
    tv.transforms = tvt
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tvt


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every parameter and buffer in place, at scales that keep activations sane."""
    g = torch.Generator().manual_seed(seed)
    norm_types = (torch.nn.LayerNorm,)
    norm_names = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, norm_types) or type(mod).__name__ == "LayerNorm2d":
            norm_names.add(mname)
    with torch.no_grad():
        tensors = dict(model.named_parameters())
        tensors.update(dict(model.named_buffers()))
        for name, t in tensors.items():
            if not t.is_floating_point():
                continue
            owner, _, leaf = name.rpartition(".")
            r = torch.randn(t.shape, generator=g, dtype=torch.float32)
            if owner in norm_names:
                new = 1.0 + 0.2 * r if leaf == "weight" else 0.1 * r
            elif leaf == "bias":
                new = 0.1 * r
            elif t.ndim >= 2 and leaf == "weight":
                fan_in = int(np.prod(t.shape[1:]))
                new = r / np.sqrt(max(fan_in, 1))
            else:
                new = 0.5 * r
            t.copy_(new.to(t.dtype))
    return model


@functools.lru_cache(maxsize=4)
def _build(name: str, image_size: int, seed: int, overrides: tuple[str, ...]):
    from sam2.build_sam import build_sam2

    extra = [f"++model.image_size={image_size}", *overrides]
    model = build_sam2(_CONFIG_FILES[name], None, device="cpu", mode="eval",
                       hydra_overrides_extra=extra)
    randomize_(model, seed)
    model.eval()
    return model


def clear_caches() -> None:
    """Forget the cached official models (the test modules' fixtures call this)."""
    _build.cache_clear()
    official_video_predictor.cache_clear()


def build_official(name: str, image_size: int = 1024, seed: int = 0,
                   overrides: tuple[str, ...] = ()) -> torch.nn.Module:
    """Official SAM2Base for a preset name with all tensors re-drawn (cached per arguments)."""
    return _build(name, image_size, seed, tuple(overrides))


def official_state_dict(name: str, image_size: int = 1024, seed: int = 0) -> dict[str, np.ndarray]:
    model = build_official(name, image_size, seed)
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def official_image_predictor(model, **kwargs):
    """The official SAM2ImagePredictor, with its feature sizes fixed for non-1024 inputs."""
    install_torchvision_standin()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model, **kwargs)
    s = model.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred


def rel_err(ours, official) -> float:
    """max |ours - official| / max |official|: the agreement measure used across the tests."""
    ours = np.asarray(ours, dtype=np.float64)
    official = np.asarray(official, dtype=np.float64)
    assert ours.shape == official.shape, (ours.shape, official.shape)
    denom = max(np.abs(official).max(), 1e-12)
    return float(np.abs(ours - official).max() / denom)


def _memory_as_float32(forward):
    """The official stores memories in bfloat16; torch's concatenation with the float32 object
    pointers turns them back into float32 in every case but one (no pointer beside them),
    where its CPU path then fails on mixed dtypes. Doing that cast ourselves changes nothing
    else."""

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if "memory" in kwargs:
            kwargs["memory"] = kwargs["memory"].float()
        return forward(*args, **kwargs)

    return wrapped


@functools.lru_cache(maxsize=1)
def official_video_predictor(name: str, image_size: int = 1024, seed: int = 0,
                             fill_hole_area: int = 0, overrides: tuple[str, ...] = (),
                             obj_score_shift: float = 0.0):
    """The official SAM2VideoPredictor (its default post-processing on) with every tensor
    re-drawn. Its hole filling needs a CUDA extension and is skipped on CPU, so parity runs
    use fill_hole_area=0 on both sides.

    Re-drawn weights put the object score near zero on every frame, so nearly all masks come
    out as "no object"; `obj_score_shift` is added to the score head's last bias to make the
    object present (large shift) or to put the decision between prompted and tracked frames.
    """
    from sam2.build_sam import build_sam2_video_predictor

    extra = [f"++model.image_size={image_size}", *overrides]
    pred = build_sam2_video_predictor(_CONFIG_FILES[name], None, device="cpu", mode="eval",
                                      hydra_overrides_extra=extra)
    randomize_(pred, seed)
    pred.eval()
    pred.fill_hole_area = fill_hole_area
    if obj_score_shift:
        import torch

        with torch.no_grad():
            pred.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += obj_score_shift
    pred.memory_attention.forward = _memory_as_float32(pred.memory_attention.forward)
    return pred
