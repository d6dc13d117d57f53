"""Converted models on disk: one params file plus a config.json beside it.

    OUT_DIR/config.json          {"format": "samv2-jax", "format_version": 2, "config": {...}}
    OUT_DIR/params.safetensors   every parameter under its flat dotted name (our layout)

One file in the safetensors format (a JSON header, then the tensors back to back), read
through a memory map: a model loads at about the speed of the disk, with no framework
start-up. Directories of format_version 1 (params/ as an orbax checkpoint) still load.
Training state, which needs more than arrays, stays in orbax (`samv2_jax.train`).

`load` also takes an official `.pt` (converted in memory) or an official model name (through
the download cache of `samv2_jax.weights.download`).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samv2_jax.config import SAM2Config
from samv2_jax.weights.layout import count_params, flatten, jax_param_shapes, unflatten

FORMAT_NAME = "samv2-jax"
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
PARAMS_DIR = "params"  # format_version 1: an orbax checkpoint
# safetensors' numpy side has no bfloat16: such tensors are stored as their uint16 bits and
# named in the file's metadata.
_BF16_KEY = "samv2_jax.bfloat16"


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

    out = Path(out_dir).expanduser().resolve()
    flat = flatten(model.params)
    found = {k: tuple(np.shape(v)) for k, v in flat.items()}
    problems = _shape_problems(found, flatten(jax_param_shapes(model.config)))
    if problems:
        raise ValueError(f"params do not fit config {model.config.name}: " + "; ".join(problems))
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} exists and is not a directory")
    cfg_file, params_file, params_dir = out / CONFIG_FILE, out / PARAMS_FILE, out / PARAMS_DIR
    if cfg_file.exists() or params_file.exists() or params_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} already holds a model; choose another directory "
                                  "or pass overwrite=True (--overwrite on the command line)")
        # config.json goes first so that a half-replaced directory never looks complete.
        cfg_file.unlink(missing_ok=True)
        params_file.unlink(missing_ok=True)
        shutil.rmtree(params_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_params(flat, params_file)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(), "num_params": model.num_params}
    tmp = out / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, cfg_file)  # written last: its presence marks a complete model
    return out


def _write_params(flat: dict, path: Path) -> None:
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    arrays, bf16 = {}, []
    for k, v in flat.items():
        a = np.ascontiguousarray(np.asarray(v))
        if a.dtype == ml_dtypes.bfloat16:
            a, _ = a.view(np.uint16), bf16.append(k)
        arrays[k] = a
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(arrays, str(tmp), metadata={_BF16_KEY: json.dumps(bf16)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    params_file, params_dir = directory / PARAMS_FILE, directory / PARAMS_DIR
    if not (directory / CONFIG_FILE).is_file() or not (params_file.is_file()
                                                       or params_dir.is_dir()):
        raise ValueError(
            f"{str(directory)!r} is not a converted samv2-jax model (it needs {CONFIG_FILE} and "
            f"{PARAMS_FILE}); make one with `samv2 convert CHECKPOINT.pt {directory}`"
        )
    config = _read_config(directory)
    if image_size is not None:
        config = config.replace(image_size=image_size)
    expected = flatten(jax_param_shapes(config))
    if params_file.is_file():
        params = _read_params(params_file, directory, config, expected)
    else:
        params = _read_orbax_params(params_dir, directory, config, expected)
    return Model(config=config, params=params)


def _check_shapes(found: dict, expected: dict, directory: Path, config: SAM2Config) -> None:
    problems = _shape_problems(found, expected)
    if problems:
        raise ValueError(f"{CONFIG_FILE} in {str(directory)!r} (model {config.name}) does not "
                         "match the stored tensors: " + "; ".join(problems))


# safetensors dtype names -> numpy (what save_model writes, and then some).
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "U16": "uint16", "BOOL": "bool"}


def _read_params(path: Path, directory: Path, config: SAM2Config, expected: dict):
    """The params as views of a memory map of the file, then one transfer to the device.

    The format is a little-endian u64 header length, a JSON header (per tensor: dtype,
    shape, byte offsets), then the data. It is read here rather than through safetensors'
    numpy reader, which copies every tensor out of the map first: for a large model that is
    a second pass over ~1 GB before the transfer makes a third.
    """
    import jax
    import ml_dtypes
    import numpy as np

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None) or {}
        bf16 = set(json.loads(meta.get(_BF16_KEY, "[]")))
        found = {k: tuple(v["shape"]) for k, v in header.items()}
        _check_shapes(found, expected, directory, config)
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
        flat = {}
        for k, v in header.items():
            start, stop = v["data_offsets"]
            dtype = np.dtype(_SAFETENSORS_DTYPES[v["dtype"]])
            a = data[start:stop].view(dtype).reshape(v["shape"])
            flat[k] = a.view(ml_dtypes.bfloat16) if k in bf16 else a
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        if isinstance(e, ValueError) and str(e).startswith(CONFIG_FILE):
            raise  # the shape check's own message
        raise ValueError(f"{str(path)!r} is not a readable params file ({e}); convert the "
                         "model again") from e
    # One transfer for the whole tree, straight to the default device.
    return jax.device_put(unflatten(flat))


def _read_orbax_params(params_dir: Path, directory: Path, config: SAM2Config, expected: dict):
    """format_version 1: the params as an orbax checkpoint."""
    import jax
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    try:
        stored = flatten(ckptr.metadata(params_dir).item_metadata.tree)
    except Exception as e:  # orbax raises assorted types for a damaged directory
        raise ValueError(f"{str(params_dir)!r} is not a readable orbax checkpoint ({e}); "
                         "convert the model again") from e
    _check_shapes({k: tuple(m.shape) for k, m in stored.items()}, expected, directory, config)
    # Restoring straight into device arrays avoids a second host copy.
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = unflatten({k: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
                        for k, m in stored.items()})
    return ckptr.restore(params_dir, target)


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
