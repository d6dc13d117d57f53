"""Converted models on disk: orbax-checkpoint params plus a config.json beside them.

    OUT_DIR/config.json   {"format": "samv2-jax", "format_version": 1, "config": {...}}
    OUT_DIR/params/       orbax checkpoint of the nested params dict (our layout)

`load` also takes an official `.pt` (converted in memory) or an official model name (through
the download cache of `samv2_jax.weights.download`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samv2_jax.config import SAM2Config
from samv2_jax.weights.layout import count_params, flatten, jax_param_shapes, unflatten

FORMAT_NAME = "samv2-jax"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


@dataclass(frozen=True, eq=False)
class Model:
    """A config and its params; eq=False because params are arrays."""

    config: SAM2Config
    params: dict[str, Any]

    @property
    def num_params(self) -> int:
        return count_params(self.params)


def _shape_problems(found: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
    unknown = [k for k in found if k not in expected]
    missing = [k for k in expected if k not in found]
    wrong = [f"{k!r} expected {expected[k]} found {found[k]}" for k in expected
             if k in found and tuple(found[k]) != tuple(expected[k])]
    out = []
    for label, items in (("unexpected", unknown), ("missing", missing), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:5] if label == "wrong shape" else map(repr, items[:5]))
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            out.append(f"{len(items)} {label}: {shown}{more}")
    return out


def save_model(model: Model, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `model` to `out_dir` (created if needed). Returns the directory."""
    import numpy as np
    import orbax.checkpoint as ocp

    out = Path(out_dir).expanduser().resolve()
    found = {k: tuple(np.shape(v)) for k, v in flatten(model.params).items()}
    problems = _shape_problems(found, flatten(jax_param_shapes(model.config)))
    if problems:
        raise ValueError(f"params do not fit config {model.config.name}: " + "; ".join(problems))
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} exists and is not a directory")
    cfg_file, params_dir = out / CONFIG_FILE, out / PARAMS_DIR
    if cfg_file.exists() or params_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} already holds a model; choose another directory "
                                  "or pass overwrite=True (--overwrite on the command line)")
        # config.json goes first so that a half-replaced directory never looks complete.
        cfg_file.unlink(missing_ok=True)
        shutil.rmtree(params_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(params_dir, model.params)
        ckptr.wait_until_finished()
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(), "num_params": model.num_params}
    tmp = out / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, cfg_file)  # written last: its presence marks a complete model
    return out


def _read_config(directory: Path) -> SAM2Config:
    cfg_file = directory / CONFIG_FILE
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(cfg_file)!r} is not valid JSON ({e}); convert the model "
                         "again") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{str(cfg_file)!r} is not a samv2-jax model config (no "
                         f"\"format\": \"{FORMAT_NAME}\")")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{str(cfg_file)!r} has format_version {version!r}; this samv2-jax reads "
                         f"up to {FORMAT_VERSION}, so upgrade samv2-jax or convert again")
    try:
        return SAM2Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{str(cfg_file)!r} holds an invalid model config: {e}") from e


def _load_directory(directory: Path, image_size: int | None) -> Model:
    import jax
    import orbax.checkpoint as ocp

    params_dir = directory / PARAMS_DIR
    if not (directory / CONFIG_FILE).is_file() or not params_dir.is_dir():
        raise ValueError(
            f"{str(directory)!r} is not a converted samv2-jax model (it needs {CONFIG_FILE} and "
            f"{PARAMS_DIR}/); make one with `samv2 convert CHECKPOINT.pt {directory}`"
        )
    config = _read_config(directory)
    if image_size is not None:
        config = config.replace(image_size=image_size)
    ckptr = ocp.StandardCheckpointer()
    try:
        stored = flatten(ckptr.metadata(params_dir).item_metadata.tree)
    except Exception as e:  # orbax raises assorted types for a damaged directory
        raise ValueError(f"{str(params_dir)!r} is not a readable orbax checkpoint ({e}); "
                         "convert the model again") from e
    found = {k: tuple(m.shape) for k, m in stored.items()}
    problems = _shape_problems(found, flatten(jax_param_shapes(config)))
    if problems:
        raise ValueError(f"{CONFIG_FILE} in {str(directory)!r} (model {config.name}) does not "
                         "match the stored tensors: " + "; ".join(problems))
    # Restoring straight into device arrays avoids a second host copy.
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = unflatten({k: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
                        for k, m in stored.items()})
    params = ckptr.restore(params_dir, target)
    return Model(config=config, params=params)


def _load_official(path: Path, image_size: int | None) -> Model:
    import jax

    try:
        from samv2_jax.weights.official import convert_state_dict, read_state_dict
    except ImportError as e:
        raise ImportError("reading an official .pt needs the `convert` package of samv2-jax, "
                          f"which could not be imported ({e})") from e
    state_dict = read_state_dict(path)
    config, params = convert_state_dict(state_dict, image_size=image_size)
    return Model(config=config, params=jax.device_put(params))


def load(path: str | os.PathLike, image_size: int | None = None, *,
         progress: bool = True) -> Model:
    """A model from a converted directory, an official `.pt` checkpoint, or an official name
    (`"sam2.1_hiera_tiny"`, ...: downloaded into the cache and converted once, as the
    `samv2` command does; `progress` shows that download).

    `image_size` overrides the stored input resolution; the params do not depend on it.
    """
    p = Path(path).expanduser()
    if not p.exists():
        from samv2_jax.weights.download import OFFICIAL, resolve_model

        if str(path) in OFFICIAL:
            return resolve_model(str(path), image_size, progress=progress)
        raise FileNotFoundError(f"{str(p)!r} does not exist (expected a converted model "
                                "directory, an official .pt checkpoint or an official model "
                                f"name: {', '.join(OFFICIAL)})")
    if p.is_dir():
        if not (p / CONFIG_FILE).is_file():  # a training output folder, or one checkpoint
            from samv2_jax.train.state import load_training_output

            trained = load_training_output(p, image_size)
            if trained is not None:
                return trained
        return _load_directory(p.resolve(), image_size)
    return _load_official(p, image_size)
