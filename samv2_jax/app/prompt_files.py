"""Prompts for the command line: `--point`, `--box`, `--mask` flags and a JSON prompts file.

Flag syntax (coordinates in the video's own pixels; object id 1 when `@OBJ` is left out):

    --point FRAME:X,Y[:LABEL][@OBJ]     LABEL 1 = foreground (default), 0 = background
    --box   FRAME:X0,Y0,X1,Y1[@OBJ]
    --mask  FRAME:PATH.png[@OBJ]        without @OBJ, a palettized (DAVIS) PNG gives one
                                        object per pixel value; any other PNG is object 1

A prompts file holds `{"prompts": [...]}` (or just the list) of entries
`{"frame": 0, "obj_id": 1, "points": [[x, y], ...], "labels": [1, ...], "box": [x0, y0, x1, y1],
"mask": "relative/or/absolute.png"}`; mask paths are relative to the file.

Everything is gathered into `{frame: {obj_id: Prompt}}`; points and a box for the same object
on the same frame become one prompt, as the official `add_new_points_or_box` takes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from samv2_jax.predictors.inputs import Prompt

MAX_OBJ_ID = 255  # ids are pixel values of the DAVIS-style label PNGs

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"^(\d+):({_NUM}),({_NUM})(?::(-?\d+))?(?:@(\d+))?$")
_BOX = re.compile(rf"^(\d+):({_NUM}),({_NUM}),({_NUM}),({_NUM})(?:@(\d+))?$")
_MASK = re.compile(r"^(\d+):(.+?)(?:@(\d+))?$")


@dataclass
class _Entry:
    points: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    box: list | None = None
    mask: np.ndarray | None = None
    where: list = field(default_factory=list)  # what the user wrote, for error messages


class PromptSet:
    """Prompts gathered per frame and object, checked against a video once its size is known."""

    def __init__(self):
        self._entries: dict[tuple[int, int], _Entry] = {}

    def _entry(self, frame: int, obj_id: int, where: str, with_mask_ok: bool = True) -> _Entry:
        if not 1 <= obj_id <= MAX_OBJ_ID:
            raise ValueError(f"{where}: object ids must be 1..{MAX_OBJ_ID} (they become pixel "
                             f"values of the mask PNGs), got {obj_id}")
        e = self._entries.setdefault((frame, obj_id), _Entry())
        if not with_mask_ok and e.mask is not None:
            raise ValueError(f"{where}: object {obj_id} on frame {frame} already has a mask "
                             "prompt; a mask is used alone, without points or a box")
        e.where.append(where)
        return e

    def add_point(self, frame: int, obj_id: int, xy, label: int = 1, where: str = "point"):
        if label not in (0, 1):
            raise ValueError(f"{where}: a point label is 1 (foreground) or 0 (background), "
                             f"got {label}")
        e = self._entry(frame, obj_id, where, with_mask_ok=False)
        e.points.append([float(xy[0]), float(xy[1])])
        e.labels.append(int(label))

    def add_box(self, frame: int, obj_id: int, box, where: str = "box"):
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}: a box is X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0, "
                             f"got {x0:g},{y0:g},{x1:g},{y1:g}")
        e = self._entry(frame, obj_id, where, with_mask_ok=False)
        if e.box is not None:
            raise ValueError(f"{where}: object {obj_id} on frame {frame} has two boxes; "
                             "give one box per object and frame")
        e.box = [x0, y0, x1, y1]

    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray, where: str = "mask"):
        e = self._entry(frame, obj_id, where)
        if e.points or e.box is not None or e.mask is not None:
            raise ValueError(f"{where}: object {obj_id} on frame {frame} already has a prompt; "
                             "a mask is used alone, without points, a box or another mask")
        e.mask = np.asarray(mask, bool)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def frames(self) -> list[int]:
        return sorted({f for f, _ in self._entries})

    @property
    def obj_ids(self) -> list[int]:
        return sorted({o for _, o in self._entries})

    def check(self, height: int, width: int, num_frames: int | None = None,
              what: str = "frame") -> None:
        """Raise ValueError for prompts that do not fit a video of this size and length
        (`what` names the picture in messages: "frame" for videos, "image" for one image)."""
        whole = "video" if what == "frame" else what
        own = "the video's own pixels" if what == "frame" else f"the {what}'s pixels"
        for (f, _o), e in sorted(self._entries.items()):
            where = e.where[0]
            if num_frames is not None and f >= num_frames:
                raise ValueError(f"{where}: frame {f} is past the end of the video, which has "
                                 f"{num_frames} frames (0..{num_frames - 1})")
            for (x, y), w in zip(e.points, e.where):
                if not (0 <= x <= width and 0 <= y <= height):
                    raise ValueError(f"{w}: point ({x:g}, {y:g}) is outside the {width}x{height} "
                                     f"{what}; coordinates are in {own}")
            if e.box is not None:
                x0, y0, x1, y1 = e.box
                if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                    raise ValueError(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside "
                                     f"the {width}x{height} {what}")
            if e.mask is not None and e.mask.shape != (height, width):
                raise ValueError(f"{where}: the mask is {e.mask.shape[1]}x{e.mask.shape[0]} but "
                                 f"the {whole} is {width}x{height}; give a mask of the {what}'s "
                                 "size")

    def for_frame(self, frame: int) -> dict[int, Prompt]:
        out = {}
        for (f, o), e in self._entries.items():
            if f != frame:
                continue
            if e.mask is not None:
                out[o] = Prompt(mask=e.mask)
            else:
                pts = np.asarray(e.points, np.float32).reshape(-1, 2)
                out[o] = Prompt(points=pts, labels=np.asarray(e.labels, np.int32), box=e.box)
        return dict(sorted(out.items()))


def _bad(flag: str, text: str, syntax: str) -> ValueError:
    return ValueError(f"{flag} {text!r}: expected {syntax}")


def read_mask_png(path: str | Path, what: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: mask file {str(path)!r} does not exist") from None
    except OSError as e:
        raise ValueError(f"{what}: {str(path)!r} is not a readable image ({e})") from None


def _add_mask_file(ps: PromptSet, frame: int, obj_id: int | None, path, where: str):
    im = read_mask_png(path, where)
    values = np.asarray(im if im.mode in ("P", "L", "1", "I", "I;16") else im.convert("L"))
    if values.ndim == 3:
        values = values[..., 0]
    if obj_id is None and im.mode == "P":
        ids = [int(v) for v in np.unique(values) if v != 0]
        if not ids:
            raise ValueError(f"{where}: {str(path)!r} has no object pixels (all zero)")
        for oid in ids:
            ps.add_mask(frame, oid, values == oid, where)
        return
    if obj_id is None:
        obj_id = 1
    sel = values == obj_id if im.mode == "P" and (values == obj_id).any() else values != 0
    if not sel.any():
        raise ValueError(f"{where}: {str(path)!r} has no object pixels")
    ps.add_mask(frame, obj_id, sel, where)


def add_flags(ps: PromptSet, points=(), boxes=(), masks=()) -> PromptSet:
    """Parse the command-line prompt flags into `ps`."""
    for text in points:
        m = _POINT.match(text.strip())
        if not m:
            raise _bad("--point", text, "FRAME:X,Y[:LABEL][@OBJ], e.g. 0:320,240 or 12:50,60:0@2")
        f, x, y, lab, obj = m.groups()
        ps.add_point(int(f), int(obj or 1), (x, y), 1 if lab is None else int(lab),
                     f"--point {text}")
    for text in boxes:
        m = _BOX.match(text.strip())
        if not m:
            raise _bad("--box", text, "FRAME:X0,Y0,X1,Y1[@OBJ], e.g. 0:10,20,200,180")
        f, x0, y0, x1, y1, obj = m.groups()
        ps.add_box(int(f), int(obj or 1), (x0, y0, x1, y1), f"--box {text}")
    for text in masks:
        m = _MASK.match(text.strip())
        if not m:
            raise _bad("--mask", text, "FRAME:PATH.png[@OBJ], e.g. 0:first_mask.png")
        f, path, obj = m.groups()
        _add_mask_file(ps, int(f), None if obj is None else int(obj), path, f"--mask {text}")
    return ps


_IMAGE_POINT = re.compile(rf"^({_NUM}),({_NUM})(?::(-?\d+))?$")
_IMAGE_BOX = re.compile(rf"^({_NUM}),({_NUM}),({_NUM}),({_NUM})$")


def add_image_flags(ps: PromptSet, points=(), box: str | None = None) -> PromptSet:
    """`samv2 segment`'s flags (one image: no frame, one object) into `ps`, as frame 0,
    object 1: `--point X,Y[:LABEL]` (repeatable) and `--box X0,Y0,X1,Y1`."""
    for text in points:
        m = _IMAGE_POINT.match(text.strip())
        if not m:
            raise _bad("--point", text, "X,Y[:LABEL], e.g. 320,240 or 50,60:0")
        x, y, lab = m.groups()
        ps.add_point(0, 1, (x, y), 1 if lab is None else int(lab), f"--point {text}")
    if box is not None:
        m = _IMAGE_BOX.match(box.strip())
        if not m:
            raise _bad("--box", box, "X0,Y0,X1,Y1 with X1 > X0, Y1 > Y0")
        ps.add_box(0, 1, m.groups(), f"--box {box}")
    return ps


def _int(entry: dict, key: str, where: str, default=None) -> int:
    v = entry.get(key, default)
    if v is None:
        raise ValueError(f"{where}: missing {key!r}")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{where}: {key!r} must be a non-negative integer, got {v!r}")
    return v


def add_file(ps: PromptSet, path: str | Path) -> PromptSet:
    """Read a JSON prompts file (see the module docstring) into `ps`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"prompts file {str(path)!r} is not valid JSON ({e})") from None
    entries = doc.get("prompts") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError(f"prompts file {str(path)!r} must hold a list of prompts or "
                         '{"prompts": [...]}')
    for i, e in enumerate(entries):
        where = f"{path.name}, prompt {i}"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: each prompt is an object like "
                             '{"frame": 0, "obj_id": 1, "points": [[x, y]], "labels": [1]}')
        unknown = set(e) - {"frame", "obj_id", "points", "labels", "box", "mask"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; use frame, obj_id, "
                             "points, labels, box, mask")
        frame = _int(e, "frame", where)
        obj = _int(e, "obj_id", where, 1)
        if "mask" in e:
            mpath = Path(e["mask"])
            _add_mask_file(ps, frame, obj, mpath if mpath.is_absolute() else path.parent / mpath,
                           where)
            continue
        pts = e.get("points") or []
        labels = e.get("labels")
        try:
            pts = np.asarray(pts, np.float64).reshape(-1, 2)
        except (ValueError, TypeError):
            raise ValueError(f"{where}: points must be a list of [x, y] pairs") from None
        labels = [1] * len(pts) if labels is None else list(labels)
        if len(labels) != len(pts):
            raise ValueError(f"{where}: {len(pts)} points but {len(labels)} labels")
        for xy, lab in zip(pts, labels):
            ps.add_point(frame, obj, xy, lab, where)
        if e.get("box") is not None:
            box = e["box"]
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise ValueError(f"{where}: box must be 4 numbers [x0, y0, x1, y1]")
            ps.add_box(frame, obj, box, where)
        if not len(pts) and e.get("box") is None:
            raise ValueError(f"{where}: a prompt needs points, a box or a mask")
    return ps
