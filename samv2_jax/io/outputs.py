"""Result writers for video object tracking: label PNGs, an overlay video and a JSON document.

Every writer keeps its file readable after each frame, so a run that is killed part way leaves
every finished frame behind:

- label PNGs are written to a temporary name and renamed into place;
- the overlay video (`overlay_video.py`) is muxed one self-contained fragment per frame;
- the JSON document gets its closing brackets rewritten after every frame.

Only numpy, Pillow and PyAV are needed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from samv2_jax.io import rle as _rle
from samv2_jax.io.files import write_all
from samv2_jax.io.overlay_video import OverlayVideoWriter

__all__ = [
    "PALETTE",
    "label_map",
    "write_label_png",
    "read_label_png",
    "overlay",
    "rle_encode",
    "rle_decode",
    "mask_box",
    "object_record",
    "LabelPngWriter",
    "OverlayVideoWriter",
    "ResultsJsonWriter",
]


def _voc_palette() -> np.ndarray:
    # Bits 0, 3, 6, ... of the index go to red from the top bit down, bits 1, 4, 7, ... to
    # green and bits 2, 5, ... to blue: the colour map DAVIS and PASCAL VOC PNGs carry.
    idx = np.arange(256)
    pal = np.zeros((256, 3), np.uint8)
    for level in range(8):
        for ch in range(3):
            pal[:, ch] |= (((idx >> (3 * level + ch)) & 1) << (7 - level)).astype(np.uint8)
    pal.flags.writeable = False
    return pal


PALETTE: np.ndarray = _voc_palette()


# --- label maps and PNGs ----------------------------------------------------------------------

def _check_obj_id(obj_id) -> int:
    if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
        raise ValueError(f"object id {obj_id!r} is not an integer; label maps hold ids 1..255")
    if not 1 <= int(obj_id) <= 255:
        raise ValueError(f"object id {int(obj_id)} is outside 1..255: a label map stores one "
                         "byte per pixel and 0 is the background (the DAVIS convention)")
    return int(obj_id)


def label_map(masks: np.ndarray, obj_ids: Sequence[int],
              logits: np.ndarray | None = None) -> np.ndarray:
    """[O, H, W] masks -> [H, W] uint8 map of object ids, 0 where no object is.

    Where masks overlap, the object with the highest logit wins when `logits` ([O, H, W]) is
    given, otherwise the later object.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [O, H, W], got shape {masks.shape}")
    ids = [_check_obj_id(i) for i in obj_ids]
    if len(ids) != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {len(ids)} object ids")
    masks = masks.astype(bool, copy=False)
    n, h, w = masks.shape
    if n == 0:
        return np.zeros((h, w), np.uint8)
    if logits is None:
        # argmax finds the first True; searching the reversed stack finds the last one.
        winner = n - 1 - np.argmax(masks[::-1], axis=0)
    else:
        logits = np.asarray(logits)
        if logits.shape != masks.shape:
            raise ValueError(f"logits shape {logits.shape} differs from masks shape "
                             f"{masks.shape}")
        winner = np.argmax(np.where(masks, logits.astype(np.float32, copy=False), -np.inf),
                           axis=0)
    lut = np.asarray(ids, np.uint8)
    return np.where(masks.any(axis=0), lut[winner], np.uint8(0)).astype(np.uint8, copy=False)


def _as_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map is [H, W], got shape {labels.shape}")
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype == bool or np.issubdtype(labels.dtype, np.integer):
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label values must lie in 0..255")
        return labels.astype(np.uint8)
    raise ValueError(f"a label map holds integers, got dtype {labels.dtype}")


def _temp_name(path: Path) -> Path:
    # Leading dot and .tmp suffix: never matched by "*.png", hidden in listings.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _unnamed_file(folder: Path, data: bytes) -> Path | None:
    """`data` in a file of `folder` that has no name until it is complete (Linux O_TMPFILE),
    then linked under a temporary name, which it returns; None where that is unsupported.

    A process killed while writing then leaves nothing behind, not even a temporary file.
    """
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        fd = os.open(folder, flag | os.O_WRONLY, 0o666)
    except OSError:
        return None  # a filesystem without unnamed files
    try:
        write_all(fd, data)
        tmp = _temp_name(folder / "x")
        # Named through /proc as a directory fd: that makes os.link call linkat() with
        # AT_SYMLINK_FOLLOW (plain link() would try to link the /proc entry itself).
        try:
            proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None  # no /proc: write it the ordinary way
        try:
            os.link(str(fd), tmp, src_dir_fd=proc_fds, follow_symlinks=True)
        except (OSError, NotImplementedError):
            return None
        finally:
            os.close(proc_fds)
        return tmp
    finally:
        os.close(fd)


def write_label_png(path, labels: np.ndarray) -> None:
    """Write a palettized PNG (PALETTE colours, pixel value = object id), atomically: the file
    appears under its name only once complete, and an interrupted write leaves no other file."""
    labels = np.ascontiguousarray(_as_labels(labels))
    h, w = labels.shape
    img = Image.frombytes("P", (w, h), labels.tobytes())
    img.putpalette(PALETTE.tobytes())
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # encoded before any file exists
    data = buf.getvalue()
    path = Path(path)
    tmp = _unnamed_file(path.parent, data)
    try:
        if tmp is None:
            tmp = _temp_name(path)
            # O_EXCL with mode 0o666 leaves the permissions to the umask, as open() would.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_label_png(path) -> np.ndarray:
    """[H, W] uint8 label indices of a palettized (or greyscale) PNG."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: a label PNG is palettized or greyscale, this one is "
                             f"mode {img.mode!r}")
        return np.array(img, dtype=np.uint8)


# --- overlay ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _blend_table(alpha: float) -> np.ndarray:
    """[512] uint64 lookup: entry l (< 256 tinted, >= 256 outline) packs four uint16 lanes,
    the colour term premultiplied by alpha (plus 128 for rounding) and the frame's weight."""
    a = int(round(alpha * 256))
    tab = np.empty((512, 4), np.uint16)
    tab[:256, :3] = PALETTE.astype(np.uint16) * a + 128
    tab[:256, 3] = 256 - a
    tab[256:, :3] = PALETTE.astype(np.uint16) * 256 + 128
    tab[256:, 3] = 0
    tab[0] = tab[256] = (128, 128, 128, 256)  # background: (f * 256 + 128) >> 8 == f
    packed = tab.view(np.uint64).ravel()
    packed.flags.writeable = False
    return packed


def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
            outline: bool = True) -> np.ndarray:
    """Tint each object in its PALETTE colour; background pixels are left exactly as they are.

    The outline, in the full colour, lies inside each object: 1 px thick, 2 px on frames of
    480 lines or more.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be [H, W, 3] uint8 RGB, got {frame.shape} {frame.dtype}")
    labels = _as_labels(labels)
    if labels.shape != frame.shape[:2]:
        raise ValueError(f"labels {labels.shape} and frame {frame.shape[:2]} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    obj = labels != 0
    rows = np.flatnonzero(obj.any(axis=1))
    out = frame.copy()
    if rows.size == 0:
        return out
    cols = np.flatnonzero(obj.any(axis=0))
    # Only the objects' bounding box (plus 1 px, for the outline to see the neighbours) is
    # touched: small objects on a big frame cost little.
    y0, y1 = max(rows[0] - 1, 0), rows[-1] + 2
    x0, x1 = max(cols[0] - 1, 0), cols[-1] + 2
    lab = labels[y0:y1, x0:x1]
    idx = lab.astype(np.uint16)
    if outline:
        # Pixels whose 4-neighbourhood holds another label (edges of the frame do not count).
        edge = np.zeros(lab.shape, bool)
        diff = lab[:, 1:] != lab[:, :-1]
        edge[:, 1:] |= diff
        edge[:, :-1] |= diff
        diff = lab[1:] != lab[:-1]
        edge[1:] |= diff
        edge[:-1] |= diff
        if min(frame.shape[:2]) >= 480:
            grown = edge.copy()
            grown[:, 1:] |= edge[:, :-1]
            grown[:, :-1] |= edge[:, 1:]
            grown[1:] |= edge[:-1]
            grown[:-1] |= edge[1:]
            edge = grown
        idx |= edge.view(np.uint8).astype(np.uint16) << 8
    # One table lookup per pixel gives both blend weights; then integer multiply-add:
    # about 3x faster than indexing PALETTE and blending in float.
    terms = _blend_table(alpha).take(idx).view(np.uint16).reshape(*lab.shape, 4)
    mixed = frame[y0:y1, x0:x1].astype(np.uint16)
    mixed *= terms[..., 3:]
    mixed += terms[..., :3]
    mixed >>= 8
    out[y0:y1, x0:x1] = mixed
    return out


# --- COCO RLE, boxes and per-object records ---------------------------------------------------

def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a [H, W] mask: {"size": [H, W], "counts": str}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode takes one [H, W] mask, got shape {mask.shape}")
    return _rle.compress(_rle.encode(mask))


def rle_decode(rle: dict) -> np.ndarray:
    """[H, W] bool mask of a COCO RLE, compressed (str/bytes counts) or not (list of ints)."""
    return _rle.decode(rle)


def mask_box(mask: np.ndarray) -> list[int] | None:
    """[x0, y0, x1, y1], inclusive pixel bounds of a [H, W] mask; None when it is empty."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_box takes one [H, W] mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def object_record(obj_id: int, mask: np.ndarray, score: float) -> dict:
    """One object in one frame, as the JSON document stores it."""
    mask = np.asarray(mask, dtype=bool)
    area = int(np.count_nonzero(mask))
    score = float(score)
    return {"obj_id": int(obj_id), "score": score, "visible": bool(score > 0 and area > 0),
            "area": area, "box": mask_box(mask), "rle": rle_encode(mask)}


# --- label PNG folder -------------------------------------------------------------------------

class LabelPngWriter:
    """A folder of per-frame label PNGs named 00000.png, 00001.png, ..."""

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:
            raise OSError(errno.ENOTDIR, f"cannot write masks to {str(self.folder)!r}: it "
                          "exists and is not a folder") from e
        except OSError as e:
            raise OSError(e.errno, f"cannot create the masks folder {str(self.folder)!r}: "
                          f"{e.strerror}") from e
        # Find out now, not after the first (possibly long) frame, that writing fails.
        probe = _temp_name(self.folder / "probe")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            os.unlink(probe)
        except OSError as e:
            raise OSError(e.errno, f"cannot write masks to the folder {str(self.folder)!r}: "
                          f"{e.strerror}") from e
        self.frames_written = 0
        self._closed = False

    def path(self, frame_idx: int) -> Path:
        return self.folder / f"{frame_idx:05d}.png"

    def write(self, frame_idx: int, labels: np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"LabelPngWriter for {str(self.folder)!r} is closed")
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)) \
                or frame_idx < 0:
            raise ValueError(f"frame index must be a non-negative integer, got {frame_idx!r}")
        target = self.path(int(frame_idx))
        try:
            write_label_png(target, labels)
        except OSError as e:
            raise OSError(e.errno, f"cannot write {str(target)!r}: {e.strerror or e}") from e
        self.frames_written += 1

    def remove(self, frame_idx: int) -> None:
        """Take back frame `frame_idx`'s PNG (a frame that could not be written everywhere)."""
        self.path(int(frame_idx)).unlink(missing_ok=True)
        self.frames_written -= 1

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- results JSON -----------------------------------------------------------------------------

def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value, **kw) -> str:
    # allow_nan=False: NaN/Infinity are not JSON, and a reader would reject the whole file.
    return json.dumps(value, default=_json_default, allow_nan=False, **kw)


class ResultsJsonWriter:
    """One JSON document, valid on disk after every frame:

    {**header, "frames": [{"frame_idx": i, "objects": [...]}, ...], "complete": false}

    The file stays open; each frame is written, together with a fresh copy of the closing text,
    in one pwrite over the previous closing text, so the document is always whole.
    """

    def __init__(self, path, header: dict):
        self.path = Path(path)
        header = dict(header)
        for key in ("frames", "complete"):
            if key in header:
                raise ValueError(f"the results header may not use the key {key!r}")
        self._header_keys = set(header)
        head = _dumps(header, separators=(", ", ": "))
        opening = head[:-1] + (", " if header else "") + '"frames": [\n'
        self._closing = self._closing_text({"complete": False})
        try:
            self._fd: int | None = os.open(self.path,
                                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as e:
            raise OSError(e.errno, f"cannot create the results file {str(self.path)!r}: "
                          f"{e.strerror}") from e
        self._end = 0  # where the closing text starts
        self.frames_written = 0
        try:
            self._pwrite((opening + self._closing).encode(), 0)
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            raise OSError(e.errno, f"cannot write the results file {str(self.path)!r}: "
                          f"{e.strerror}") from e
        self._end = len(opening.encode())

    @staticmethod
    def _closing_text(tail: dict) -> str:
        return "\n], " + _dumps(tail, separators=(", ", ": "))[1:] + "\n"

    def _pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _replace_tail(self, text: str) -> None:
        """Write `text` at the closing offset; on failure restore the last valid document."""
        data = text.encode()
        try:
            self._pwrite(data, self._end)
        except OSError as e:
            restored = True
            try:
                old = self._closing.encode()
                os.ftruncate(self._fd, self._end + len(old))
                self._pwrite(old, self._end)
            except OSError:
                restored = False
            state = (f"it still holds the {self.frames_written} frame(s) written before"
                     if restored else "it could not be restored and may not parse")
            raise OSError(e.errno, f"cannot write the results file {str(self.path)!r} "
                          f"({e.strerror or e}); {state}") from e

    def add_frame(self, frame_idx: int, objects: list[dict]) -> None:
        if self._fd is None:
            raise ValueError(f"the results file {str(self.path)!r} is closed")
        record = _dumps({"frame_idx": int(frame_idx), "objects": list(objects)},
                        separators=(",", ":"))
        body = ("" if self.frames_written == 0 else ",\n") + record
        self._replace_tail(body + self._closing)
        self._end += len(body.encode())
        self.frames_written += 1

    def close(self, status: dict | None = None) -> None:
        """Finish the document with {"complete": true} updated by `status`."""
        if self._fd is None:
            return
        tail = {"complete": True, **(status or {})}
        clash = sorted(k for k in tail if k == "frames" or k in self._header_keys)
        if clash:
            raise ValueError(f"status keys {clash} clash with the results document's keys")
        text = self._closing_text(tail)
        shortfall = len(self._closing.encode()) - len(text.encode())
        if shortfall > 0:
            # Pad with spaces instead of truncating: between a pwrite and an ftruncate the
            # file would end in stray bytes.
            text = text[:-1] + " " * shortfall + "\n"
        self._replace_tail(text)
        self._closing = text
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._fd is not None:
            self.close({"complete": False, "reason": exc_type.__name__})

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
