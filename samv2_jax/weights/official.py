"""Read an official SAM 2 `.pt` safely, check it against its config, and convert it.

torch is imported lazily, inside `read_state_dict`: checking and converting a state dict
that is already in memory (numpy arrays) needs no torch.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from samv2_jax.config import SAM2Config, config_from_state_dict, get_config
from samv2_jax.weights.layout import from_official, is_dropped, official_param_shapes

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTO2 = b"\x80\x02"  # torch.save's legacy format starts with a protocol-2 pickle
_EXAMPLE_KEY = "image_encoder.trunk.patch_embed.proj.weight"
_TORCH_MISSING = (
    "reading an official PyTorch checkpoint needs torch: `pip install torch` (the CPU build is "
    "enough), or convert it where torch is installed with `samv2 convert CHECKPOINT.pt OUT_DIR` "
    "and load OUT_DIR instead"
)


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(_TORCH_MISSING) from e
    return torch


def _torch_detail(err: Exception) -> str:
    """The informative line of a torch.load error (its messages open with generic advice)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln:
            return ln
    return lines[-1] if lines else type(err).__name__


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of an official checkpoint (`{"model": state_dict}` or a bare state dict).

    Loads with `weights_only=True` only: a file whose unpickling would run code is refused.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a .pt checkpoint file "
                         "(a converted model directory loads with samv2_jax.weights.store.load)")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{str(path)!r} is empty; download the checkpoint again")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO2)):
        raise ValueError(
            f"{str(path)!r} is not a PyTorch checkpoint (it starts with {head!r}, neither a "
            "torch.save zip archive nor a legacy torch pickle); pass an official SAM 2 .pt file"
        )
    try:
        torch = _import_torch()
    except ImportError:
        # --- torch-free fallback (weights/torch_free.py): a zip checkpoint reads without torch
        if not head.startswith(_ZIP_MAGIC):
            raise
        from samv2_jax.weights.torch_free import read_state_dict_without_torch

        sd = read_state_dict_without_torch(path)
        if not any(k.startswith("image_encoder.") for k in sd):
            raise ValueError(f"{str(path)!r} holds no SAM 2 tensors: expected keys like "
                             f"{_EXAMPLE_KEY!r}, found {_few(list(sd)) or 'an empty dict'}"
                             ) from None
        return {k: v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v
                for k, v in sd.items()}
        # --- end of the torch-free fallback
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise ValueError(
                f"refusing to load {str(path)!r}: it holds pickled Python objects that would run "
                f"code when loaded, which weights_only=True does not allow ({_torch_detail(e)}). "
                "A SAM 2 checkpoint holds only tensors; re-save just the state dict with "
                "torch.save({'model': model.state_dict()}, path) where you trust the file"
            ) from e
        raise ValueError(f"{str(path)!r} could not be unpickled as a PyTorch checkpoint: "
                         f"{_torch_detail(e)}") from e
    except (RuntimeError, EOFError, OSError) as e:
        # torch's own text goes on with generic advice after its first sentence
        detail = str(e).split(". ")[0].splitlines()[0].rstrip(".") if str(e) else type(e).__name__
        raise ValueError(
            f"{str(path)!r} is truncated or corrupted ({detail}); download the checkpoint again"
        ) from e
    except Exception as e:  # torch raises assorted types for garbage inside a valid container
        raise ValueError(f"{str(path)!r} could not be read as a PyTorch checkpoint "
                         f"({type(e).__name__}: {_torch_detail(e)})") from e
    return _tensors_of(obj, path)


def _tensors_of(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        sd = obj["model"]
    elif isinstance(obj, Mapping):
        sd = obj
    else:
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict; "
                         "expected {'model': state_dict} as in the official checkpoints, or a "
                         "bare state dict")
    if not any(isinstance(k, str) and k.startswith("image_encoder.") for k in sd):
        raise ValueError(
            f"{str(path)!r} holds no SAM 2 tensors: expected keys like {_EXAMPLE_KEY!r} (inside "
            f"'model' or at the top level), found {_few([str(k) for k in sd]) or 'an empty dict'}"
        )
    out = {}
    for k, v in sd.items():
        if not hasattr(v, "detach"):
            raise ValueError(f"{str(path)!r}: entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().cpu()
        if t.is_floating_point():
            t = t.float()  # no copy for float32; numpy has no bfloat16
        out[str(k)] = t.numpy()
    return out


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor, without importing torch here
        v = v.detach().cpu().float().numpy()
    return np.asarray(v)


def _problems(shapes: Mapping[str, tuple], cfg: SAM2Config) -> list[str]:
    expected = official_param_shapes(cfg)
    unknown = [k for k in shapes if k not in expected and not is_dropped(k)]
    missing = [k for k in expected if k not in shapes and not is_dropped(k)]
    wrong = [k for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    out = []
    if unknown:
        out.append(f"{len(unknown)} unexpected key(s): {_few(unknown)}")
    if missing:
        out.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if wrong:
        listed = ", ".join(f"{k!r} expected {expected[k]} found {tuple(shapes[k])}"
                           for k in wrong[:5])
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        out.append(f"{len(wrong)} shape mismatch(es): {listed}{more}")
    return out


def _suggestion(shapes: Mapping[str, tuple], cfg: SAM2Config) -> str:
    try:
        inferred = config_from_state_dict(shapes, cfg.image_size)
    except ValueError:
        return "; the tensors match none of the official SAM 2 models"
    if inferred != cfg and not _problems(shapes, inferred):
        return (f"; the tensors do match {inferred.name}: pass config=get_config("
                f"{inferred.name!r}) or no config to infer it")
    return ""


def convert_state_dict(
    state_dict: Mapping[str, Any],
    config: SAM2Config | None = None,
    image_size: int | None = None,
) -> tuple[SAM2Config, dict]:
    """Check an official state dict against `config` (inferred if None) and convert it.

    Returns the config and our nested params (float32 numpy arrays in our layout). Every key
    must be an expected tensor of the config (or listed in DROPPED_KEYS) and every expected
    tensor must be present with its exact shape.
    """
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    if config is None:
        config = config_from_state_dict(shapes, image_size)
    else:
        if isinstance(config, str):
            config = get_config(config)
        if image_size is not None:
            config = config.replace(image_size=image_size)
    problems = _problems(shapes, config)
    if problems:
        raise ValueError(f"the checkpoint does not fit {config.name}: " + "; ".join(problems)
                         + _suggestion(shapes, config))
    flat = {k: np.ascontiguousarray(_to_numpy(v), dtype=np.float32) for k, v in state_dict.items()}
    params = from_official(flat)
    # Transposes give strided views; make every leaf a plain array for saving and device_put.
    params = _map_leaves(params, np.ascontiguousarray)
    return config, params


def _map_leaves(tree: dict, fn) -> dict:
    return {k: _map_leaves(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def convert_checkpoint(
    pt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Official `.pt` -> a converted directory (orbax params + config.json) at `out_dir`."""
    from samv2_jax.weights.store import Model, save_model

    state_dict = read_state_dict(pt_path)
    config, params = convert_state_dict(state_dict, image_size=image_size)
    return save_model(Model(config=config, params=params), out_dir, overwrite=overwrite)
