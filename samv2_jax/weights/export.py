"""Our params back to an official checkpoint: `{"model": state_dict}` with the official key
names and layouts, the file the official `build_sam2(config, ckpt_path)` loads (strict).

    samv2 export OUT model.pt          # OUT: a training output folder or a converted model

torch is needed to write the file (imported only here).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from samv2_jax.weights.layout import official_param_shapes, to_official


def official_state_dict(model) -> dict[str, np.ndarray]:
    """The official state dict (numpy, float32) of a `Model`, checked against the official
    parameter list of its config."""
    flat = to_official(model.params)
    expected = official_param_shapes(model.config)
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    wrong = [k for k in expected if k in flat and tuple(flat[k].shape) != tuple(expected[k])]
    if missing or extra or wrong:
        raise ValueError(f"params do not form an official {model.config.name} state dict: "
                         f"missing {missing[:3]}, unexpected {extra[:3]}, wrong shape "
                         f"{wrong[:3]}")
    return {k: np.ascontiguousarray(flat[k], dtype=np.float32) for k in expected}


def export_official(model, path, overwrite: bool = False) -> Path:
    """Write `model` (a Model, or a path `samv2_jax.load` takes) as an official `.pt`."""
    try:
        import torch
    except ImportError:
        raise ImportError("writing an official .pt needs torch (pip install torch)") from None
    if not hasattr(model, "params"):
        from samv2_jax.weights.store import load

        model = load(model)
    path = Path(path).expanduser()
    if path.suffix != ".pt":
        raise ValueError(f"{str(path)!r}: an official checkpoint is a .pt file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; choose another name or pass overwrite=True "
                              "(--overwrite)")
    state = {k: torch.from_numpy(np.array(v)) for k, v in official_state_dict(model).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"model": state}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
