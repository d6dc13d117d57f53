"""Read a `torch.save` checkpoint (zip format) with numpy only, so no torch is needed.

The pickle inside the archive is read by an unpickler that knows just the handful of globals
a tensor state dict refers to; any other global is refused before anything could run, so a
checkpoint can never execute code. Tensors come back as numpy arrays with torch.load's dtypes,
except bfloat16, which numpy lacks and which is widened (exactly) to float32.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02"  # torch.save(..., _use_new_zipfile_serialization=False)
_CHUNK = 1 << 24


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.<X>Storage`, which the pickle names to give a storage's dtype."""

    name: str
    dtype: np.dtype  # dtype of the bytes on disk (bfloat16: uint16)
    bfloat16: bool = False


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dt), name == "BFloat16Storage")
    for name, dt in {
        "DoubleStorage": np.float64,
        "FloatStorage": np.float32,
        "HalfStorage": np.float16,
        "BFloat16Storage": np.uint16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.uint8,
        "ComplexFloatStorage": np.complex64,
        "ComplexDoubleStorage": np.complex128,
    }.items()
}


class _Storage:
    """One `data/<key>` member, decoded to a flat native-endian array."""

    def __init__(self, stype: _StorageType, key: str, flat: np.ndarray):
        self.stype, self.key, self.flat = stype, key, flat


class _Damaged(ValueError):
    """Inconsistent archive contents; reported with the file name by the caller."""


class _Refused(ValueError):
    """A complete message that already names the file."""


def _is_index(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise _Damaged(f"a tensor refers to {type(storage).__name__}, not to a stored tensor")
    size, stride = tuple(size), tuple(stride)
    if not (_is_index(storage_offset) and len(size) == len(stride)
            and all(map(_is_index, size)) and all(map(_is_index, stride))):
        raise _Damaged(f"invalid tensor layout (offset {storage_offset!r}, size {size!r}, "
                       f"stride {stride!r}) for storage {storage.key!r}")
    flat = storage.flat
    if 0 in size:
        return np.empty(size, flat.dtype)
    # as_strided does no bounds checking: a bad layout must not read outside the buffer.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise _Damaged(f"a tensor of size {size} with stride {stride} at offset "
                       f"{storage_offset} reaches past the {flat.size} elements of storage "
                       f"{storage.key!r}")
    contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    if storage_offset == 0 and int(np.prod(size)) == flat.size and all(
            st == c for n, st, c in zip(size, stride, contiguous) if n > 1):
        return flat.reshape(size)  # the whole storage in order: share it, as torch.load does
    base = flat[storage_offset:]
    view = np.lib.stride_tricks.as_strided(
        base, shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False)
    return view.copy()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise _Refused(
            f"refusing to load {str(self._archive.path)!r}: its pickle refers to the Python "
            f"global {module}.{name}, which a tensor checkpoint never needs and which could run "
            "code; only state dicts of plain tensors are read"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Damaged(f"unknown persistent reference {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _is_index(numel):
            raise _Damaged(f"invalid storage reference {pid!r:.120}")
        cached = self._storages.get(key)
        if cached is not None:
            if cached.stype != stype:
                raise _Damaged(f"storage {key!r} is referenced as both {cached.stype.name} "
                               f"and {stype.name}")
            return cached
        storage = _Storage(stype, key, self._archive.storage(key, stype, numel))
        self._storages[key] = storage
        return storage


class _Archive:
    def __init__(self, path: Path, zf: zipfile.ZipFile):
        self.path, self.zf = path, zf
        pkls = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise _Refused(f"{str(path)!r} is a zip archive but not a PyTorch checkpoint (it "
                             "has no <name>/data.pkl); pass an official SAM 2 .pt file")
        self.pkl = pkls[0]
        self.prefix = self.pkl[: -len("data.pkl")]
        self.read_names: set[str] = set()
        order = "little"
        if self.prefix + "byteorder" in zf.namelist():
            order = self.read(self.prefix + "byteorder").decode("ascii", "replace").strip()
        # torch writes no byteorder record before 1.13; those files were little endian
        if order not in ("little", "big"):
            raise _Damaged(f"unknown byte order {order!r}")
        self.endian = "<" if order == "little" else ">"

    def read(self, name: str) -> bytes:
        data = self.zf.read(name)  # a full read makes zipfile compare the CRC-32
        self.read_names.add(name)
        return data

    def storage(self, key: str, stype: _StorageType, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise _Damaged(f"member {name!r} is missing") from None
        nbytes = numel * stype.dtype.itemsize
        if info.file_size != nbytes:
            raise _Damaged(f"member {name!r} holds {info.file_size} bytes, but its {numel} "
                           f"{stype.name} elements need {nbytes}")
        # Read straight into a writable array: tensors spanning a whole storage then need no copy.
        buf = np.empty(nbytes, np.uint8)
        with self.zf.open(info) as f:
            got = f.readinto(memoryview(buf))
            if got != nbytes or f.read(1):  # reading on to the end makes zipfile check the CRC
                raise _Damaged(f"member {name!r} does not hold the {nbytes} bytes it declares")
        self.read_names.add(name)
        flat = buf.view(stype.dtype.newbyteorder(self.endian))
        if stype.bfloat16:
            # bfloat16 is the top half of a float32, so the widening is exact.
            return (flat.astype(np.uint32) << 16).view(np.float32)
        if stype.name == "BoolStorage":
            return flat != 0
        return flat.astype(stype.dtype.newbyteorder("="), copy=False)

    def check_remaining(self) -> None:
        """Read every member not read yet, so that each one's CRC-32 is checked."""
        for info in self.zf.infolist():
            if info.filename in self.read_names or info.is_dir():
                continue
            with self.zf.open(info) as f:
                while f.read(_CHUNK):
                    pass


def _state_dict_of(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict; "
                         "expected {'model': state_dict} as in the official checkpoints, or a "
                         "bare state dict")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, np.ndarray):
            raise ValueError(f"{str(path)!r}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[str(k)] = v
    return out


def read_state_dict_without_torch(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a `torch.save` zip checkpoint (`{"model": state_dict}` or a bare state dict).

    Returns numpy arrays with the saved dtypes (bfloat16 widened to float32). Every zip member's
    CRC-32 is checked; damage, a legacy (non-zip) torch file, or a pickle that refers to anything
    but tensors raise ValueError.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory, not a .pt checkpoint file")
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_LEGACY_MAGIC):
        raise ValueError(
            f"{str(path)!r} is in torch's legacy (non-zip) format, which only torch can read: "
            "install torch (`pip install torch`), or re-save it with a recent torch as "
            "torch.save(torch.load(path, weights_only=True), path)")
    if head != _ZIP_MAGIC:
        raise ValueError(f"{str(path)!r} is not a PyTorch checkpoint (it starts with {head!r}); "
                         "pass an official SAM 2 .pt file")
    try:
        with zipfile.ZipFile(path) as zf:
            archive = _Archive(path, zf)
            obj = _TensorUnpickler(archive.read(archive.pkl), archive).load()
            archive.check_remaining()
    except _Refused:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, struct.error, ValueError,
            pickle.UnpicklingError, KeyError, IndexError, TypeError, AttributeError,
            MemoryError, RecursionError) as e:
        # zipfile and pickle raise these for cut-off or scrambled bytes
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ValueError(f"{str(path)!r} is truncated or damaged; download it again "
                         f"({detail})") from e
    return _state_dict_of(obj, path)
