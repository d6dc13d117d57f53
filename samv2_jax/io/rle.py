"""COCO run-length encoding in vectorised numpy: the project's one RLE implementation.

An RLE describes an [H, W] mask in column-major (Fortran) order as alternating run lengths,
background first (so a mask whose first pixel is set starts with a 0 run). Two forms:

- uncompressed: {"size": [H, W], "counts": [int, ...]}, as the official automatic mask
  generator's `uncompressed_rle` output and pycocotools' `frPyObjects` input;
- compressed (COCO's text form): {"size": [H, W], "counts": str}, as pycocotools writes it.

`encode` finds each mask's changes inside its bounding box only, so small masks in a large
image cost little; a mask can also be given at an offset inside a larger image (a crop), which
is encoded without ever building the padded mask. Only numpy is needed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode", "decode", "compress", "area", "box", "counts_to_string",
           "string_to_counts"]

# Up to 64-bit values in 5-bit groups.
_MAX_GROUPS = 13


def _changes(sub: np.ndarray, x0: int, y0: int, height: int) -> np.ndarray:
    """Column-major positions, in an image `height` rows tall, where the value changes, for a
    block `sub` (every set pixel of the mask) whose top-left pixel is (x0, y0) and outside
    which the mask is empty."""
    hh, ww = sub.shape
    if y0 == 0 and hh == height:
        # Full-height block: columns follow each other directly in column-major order.
        flat = sub.T.ravel()
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        parts = [edges + x0 * height]
        if flat[0]:
            parts.insert(0, np.array([x0 * height]))
        if flat[-1]:
            parts.append(np.array([x0 * height + flat.size]))
        return np.concatenate(parts)
    # Otherwise each column is framed by empty pixels above and below (real ones, or the
    # image edge where the next column starts with empty pixels anyway).
    framed = np.zeros((ww, hh + 2), bool)
    framed[:, 1:-1] = sub.T
    col, k = np.nonzero(framed[:, 1:] != framed[:, :-1])
    return (x0 + col) * height + y0 + k


def encode(masks, offset: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None):
    """Uncompressed RLE of one mask [h, w] (-> a dict) or of a stack [N, h, w] (-> a list).

    The masks sit with their top-left pixel at `offset` = (x, y) in an image of `size`
    (H, W) (default: their own size, offset (0, 0)), and are empty outside it.
    """
    m = np.asarray(masks)
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be [H, W] or [N, H, W], got shape {m.shape}")
    m = m.astype(bool, copy=False)
    n, h, w = m.shape
    ox, oy = (int(v) for v in offset)
    height, width = (h, w) if size is None else (int(size[0]), int(size[1]))
    if ox < 0 or oy < 0 or oy + h > height or ox + w > width:
        raise ValueError(f"masks of size {h}x{w} at offset (x={ox}, y={oy}) do not fit in an "
                         f"image of size {height}x{width}")
    total = height * width
    rows, cols = m.any(axis=2), m.any(axis=1)
    out = []
    for i in range(n):
        r, c = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if r.size == 0:
            counts = [total]
        else:
            sub = m[i, r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            changes = _changes(sub, ox + int(c[0]), oy + int(r[0]), height)
            changes = changes[changes < total]  # a change at the very end is no change
            counts = np.diff(np.concatenate(([0], changes, [total]))).tolist()
        out.append({"size": [height, width], "counts": counts})
    return out[0] if single else out


def counts_to_string(counts) -> str:
    """COCO's text form of run lengths: from the fourth on, each count is stored as its
    difference to the count two places back; every value is written in 5-bit groups, low
    group first, with bit 0x20 meaning "more groups follow" and the last group's 0x10 bit
    giving the sign; 48 is added to each group to make it printable."""
    c = np.asarray(counts, np.int64).ravel()
    if c.size == 0:
        return ""
    x = c.copy()
    x[3:] -= c[1:-2]
    shifts = 5 * np.arange(_MAX_GROUPS, dtype=np.int64)
    groups = (x[:, None] >> shifts) & 0x1F
    rest = x[:, None] >> (shifts + 5)
    done = np.where(groups & 0x10, rest == -1, rest == 0)
    n_groups = np.argmax(done, axis=1) + 1
    j = np.arange(_MAX_GROUPS)
    chars = groups | np.where(j < (n_groups - 1)[:, None], 0x20, 0)
    used = j < n_groups[:, None]
    return (chars[used] + 48).astype(np.uint8).tobytes().decode("ascii")


def string_to_counts(s) -> list[int]:
    """The run lengths of COCO's text form (see `counts_to_string`)."""
    if isinstance(s, bytes):
        s = s.decode("ascii", errors="replace")
    try:
        raw = np.frombuffer(s.encode("ascii"), np.uint8).astype(np.int64)
    except UnicodeEncodeError:
        raise ValueError("COCO RLE counts string has non-ASCII characters") from None
    if raw.size == 0:
        return []
    v = raw - 48
    bad = np.flatnonzero((v < 0) | (v >= 64))
    if bad.size:
        raise ValueError(f"invalid character {s[bad[0]]!r} in COCO RLE counts string")
    last = (v & 0x20) == 0
    if not last[-1]:
        raise ValueError("truncated COCO RLE counts string")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    k = np.arange(v.size) - np.repeat(starts, ends - starts + 1)
    if k.max() >= _MAX_GROUPS:
        raise ValueError("COCO RLE counts string holds a value too large for 64 bits")
    x = np.add.reduceat((v & 0x1F) << (5 * k), starts)
    negative = (v[ends] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * (k[ends] + 1))), x)
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])
    counts[2::2] = np.cumsum(x[2::2])
    return counts.tolist()


def compress(rle: dict) -> dict:
    """Uncompressed RLE -> COCO's compressed form {"size": [H, W], "counts": str}."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return {"size": [int(v) for v in rle["size"]],
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    return {"size": [int(v) for v in rle["size"]], "counts": counts_to_string(counts)}


def _checked_counts(rle: dict) -> tuple[int, int, np.ndarray]:
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("an RLE is a dict with \"size\": [H, W] and \"counts\"") from None
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts.size and counts.min() < 0) or counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, not {h}x{w} = {h * w}")
    return h, w, counts


def decode(rle: dict) -> np.ndarray:
    """[H, W] bool mask of an RLE, compressed (str/bytes counts) or not (list of ints)."""
    h, w, counts = _checked_counts(rle)
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape((h, w), order="F"))


def area(rle: dict) -> int:
    """Number of set pixels (the sum of every second run)."""
    return int(_checked_counts(rle)[2][1::2].sum())


def box(rle: dict) -> list[int] | None:
    """[x0, y0, x1, y1], inclusive pixel bounds of the mask, read from the runs without
    decoding; None when the mask is empty."""
    h, _, counts = _checked_counts(rle)
    ends = np.cumsum(counts)
    first = (ends - counts)[1::2]
    last = ends[1::2] - 1
    keep = counts[1::2] > 0
    first, last = first[keep], last[keep]
    if first.size == 0:
        return None
    col0, col1 = first // h, last // h
    one_col = col0 == col1
    # A run that wraps into another column covers the rows from there to the image edges.
    y0 = np.where(one_col, first % h, 0).min()
    y1 = np.where(one_col, last % h, h - 1).max()
    return [int(col0.min()), int(y0), int(col1.max()), int(y1)]
