"""Video frame input: folders of frames, video files, arrays and cameras.

Two ways in, sharing one per-frame transform (`preprocess_frame`):

- `load_video_frames(source, image_size)`: every frame, preprocessed, as one float32 array
  [T, S, S, 3] (channels-last). On a folder of JPEGs it equals the official
  `sam2.utils.misc.load_video_frames_from_jpg_images` to the last bit.
- `open_video(source)` / `iter_video_frames(source)`: raw uint8 RGB frames [H, W, 3], decoded
  one at a time, so a camera or a 2-hour video runs in flat memory (the streaming tracker).

A source is a folder of frames named `<integer>.jpg` (or `.jpeg`, `.png`), a video file or its
bytes (anything PyAV decodes), a stream URL, a camera (an int index or `/dev/videoN`), a uint8
array [T, H, W, C] with C in (1, 3, 4), or a list of HWC uint8 arrays / PIL images.

The official transform is PIL's: `convert("RGB")`, `resize((S, S))` with Pillow's default
filter for RGB, bicubic (the official passes none), `/ 255` in float64, then float32 ImageNet
mean/std. Video files are decoded by PyAV to RGB24 and then take the same PIL path (the
official decodes with decord and lets it resize, which we cannot match and do not try to).
EXIF orientation and container rotation metadata are ignored, as in the official loaders.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from PIL import Image

from samv2_jax.modeling.transforms import IMAGENET_MEAN, IMAGENET_STD
from samv2_jax.predictors.inputs import as_rgb_uint8

__all__ = [
    "VideoInfo",
    "VideoReader",
    "open_video",
    "iter_video_frames",
    "video_info",
    "preprocess_frame",
    "load_video_frames",
    "list_frame_files",
]

JPEG_EXTENSIONS = (".jpg", ".jpeg")
PNG_EXTENSIONS = (".png",)
# What the official resize uses: Image.resize's default for RGB images.
RESAMPLE = Image.Resampling.BICUBIC

_FOLDER_HINT = (
    "name frames by their index, e.g. 00000.jpg, 00001.jpg, ... (ffmpeg -i video.mp4 -q:v 2 "
    "-start_number 0 <dir>/'%05d.jpg'), or pass the video file itself"
)


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before reading it all.

    `num_frames` is None for a stream of unknown length (a camera, a URL, some containers);
    `fps` is None when the source has no frame rate (folders, arrays).
    """

    height: int
    width: int
    num_frames: int | None
    fps: float | None
    kind: str  # "folder", "file", "stream", "camera", "array" or "list"


# --- per-frame transform --------------------------------------------------------------------


def preprocess_frame(frame, image_size: int, img_mean: Sequence[float] = IMAGENET_MEAN,
                     img_std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """One uint8 RGB frame [H, W, 3] (or a PIL image) -> float32 [image_size, image_size, 3].

    Bit-identical to the official per-frame JPEG transform, so the streaming and the offline
    paths feed the model the same numbers.
    """
    if int(image_size) <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    rgb = _frame_to_rgb(frame, "frame")
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), RESAMPLE))
    table = _normalising_table(tuple(float(m) for m in img_mean),
                               tuple(float(s) for s in img_std))
    out = np.empty(resized.shape, np.float32)
    for c in range(3):  # a table look-up per channel: 1.5x faster than the arithmetic
        np.take(table[c], resized[..., c], out=out[..., c])
    return out


@functools.cache
def _normalising_table(img_mean: tuple[float, ...], img_std: tuple[float, ...]) -> np.ndarray:
    """[3, 256] float32: each uint8 value of each channel normalised with the official's
    arithmetic (a float64 division by 255 stored as float32, then the float32 mean and std),
    so looking values up is bit-identical to computing them."""
    x = (np.arange(256) / 255.0).astype(np.float32)[None, :]
    x = x - np.asarray(img_mean, np.float32)[:, None]
    return np.ascontiguousarray(x / np.asarray(img_std, np.float32)[:, None], np.float32)


def load_video_frames(source, image_size: int, img_mean: Sequence[float] = IMAGENET_MEAN,
                      img_std: Sequence[float] = IMAGENET_STD, **open_kwargs,
                      ) -> tuple[np.ndarray, int, int]:
    """Every frame of `source`, preprocessed -> (frames [T, S, S, 3] float32, height, width).

    (height, width) is the original video size. Holds the whole video in memory; for long
    videos and cameras use `iter_video_frames` and `preprocess_frame` one frame at a time.
    """
    with open_video(source, **open_kwargs) as reader:
        if reader.info.kind == "camera":
            raise ValueError(
                f"{_describe(source)} is a live stream with no end; iterate it with "
                "iter_video_frames(...) and preprocess_frame(...) instead")
        # Fill a preallocated array (no second copy from stacking) when the length is known;
        # container frame counts are metadata and can be wrong, so the decoder has the last word.
        out = np.empty((reader.info.num_frames or 0, image_size, image_size, 3), np.float32)
        extra = []
        count = 0

        def store(i, x):
            if i < len(out):
                out[i] = x
            else:
                extra.append(x)

        # Resizing and normalising run on worker threads (Pillow and numpy release the GIL)
        # while the reader decodes the next frames (200 frames at 1024 on 2 cores: 3.8 s, not 11).
        # A few frames in flight at most, so memory stays what the result needs.
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            pending = deque()
            for count, frame in enumerate(reader, 1):
                pending.append(pool.submit(preprocess_frame, frame, image_size, img_mean,
                                           img_std))
                if len(pending) > 8:
                    store(count - len(pending), pending.popleft().result())
            while pending:
                store(count - len(pending), pending.popleft().result())
        if extra:
            out = np.concatenate([out, np.stack(extra)])
        return out[:count], reader.info.height, reader.info.width


# --- opening sources ------------------------------------------------------------------------


class VideoReader:
    """An opened source: `.info`, then one pass over its raw frames (uint8 RGB [H, W, 3]).

    Iterate it once, like a file; use it as a context manager (or call `close`) to release a
    decoder or a camera early.
    """

    def __init__(self, info: VideoInfo, frames: Iterator[np.ndarray],
                 close: Callable[[], None] | None = None):
        self.info = info
        self._frames = frames
        self._close = close

    def __iter__(self) -> VideoReader:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._frames)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(source, *, options: dict[str, str] | None = None) -> VideoReader:
    """Open `source` (see the module docstring) and read its first frame.

    Fails here, not later, with a ValueError / FileNotFoundError that says what is wrong.
    `options` go to FFmpeg when PyAV opens the source (e.g. for a camera
    {"video_size": "1280x720", "framerate": "30", "input_format": "mjpeg"}).
    """
    kind, frames, num_frames, fps, close = _open_any(source, options)
    what = _describe(source)
    try:
        first = next(frames)
    except StopIteration:
        raise ValueError(f"{what} has no frames") from None
    h, w = first.shape[:2]
    info = VideoInfo(height=int(h), width=int(w), num_frames=num_frames, fps=fps, kind=kind)
    return VideoReader(info, _same_size(chain([first], frames), h, w, what), close)


def iter_video_frames(source, **open_kwargs) -> Iterator[np.ndarray]:
    """Raw uint8 RGB frames [H, W, 3] of `source`, decoded lazily, one at a time.

    The source is opened (and checked) now; the returned generator releases it when it is
    exhausted or closed. Use `open_video` to also get the `VideoInfo`.
    """
    reader = open_video(source, **open_kwargs)

    def frames():
        with reader:
            yield from reader

    return frames()


def video_info(source, **open_kwargs) -> VideoInfo:
    """The `VideoInfo` of `source` (opens it and reads one frame)."""
    with open_video(source, **open_kwargs) as reader:
        return reader.info


def _open_any(source, options):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_av(io.BytesIO(bytes(source)), "file", options, "video bytes")
    if hasattr(source, "read") and not isinstance(source, Image.Image):
        return _open_av(source, "file", options, "video file object")
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return _open_camera(int(source), options)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), options)
    if isinstance(source, np.ndarray) or _is_jax_array(source):
        return _open_array(np.asarray(source))
    if isinstance(source, (list, tuple)):
        return _open_list(source)
    raise ValueError(
        f"unsupported video source of type {type(source).__name__}; pass a folder of frames, "
        "a video file path, a camera index, a uint8 array [T, H, W, 3] or a list of frames")


def _open_path(path: str, options):
    if path.startswith("/dev/video"):
        return _open_camera(path, options)
    if "://" in path:
        return _open_av(path, "stream", options, path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"video source {path!r} does not exist; pass a folder of frames, a video file, "
            "a camera index or an array")
    if os.path.isdir(path):
        return _open_folder(path)
    if os.path.splitext(path)[1].lower() in JPEG_EXTENSIONS + PNG_EXTENSIONS:
        # One picture: a one-frame video through the same PIL path as a folder.
        return "folder", (_read_image_file(p) for p in [path]), 1, None, None
    return _open_av(path, "file", options, path)


# --- folders of frames ----------------------------------------------------------------------


def list_frame_files(folder: str) -> list[str]:
    """Paths of the frames in `folder`, in order of the integer in their names.

    JPEGs (.jpg/.jpeg, any case) as in the official loader; when there are none, PNGs. Other
    files are ignored.
    """
    names = os.listdir(folder)
    picked = [n for n in names if os.path.splitext(n)[1].lower() in JPEG_EXTENSIONS]
    if not picked:
        picked = [n for n in names if os.path.splitext(n)[1].lower() in PNG_EXTENSIONS]
    if not picked:
        raise ValueError(f"no .jpg/.jpeg/.png frames in folder {folder!r}; {_FOLDER_HINT}")
    index = {}
    bad = []
    for name in picked:
        try:
            index[name] = int(os.path.splitext(name)[0])
        except ValueError:
            bad.append(name)
    if bad:
        shown = ", ".join(sorted(bad)[:3]) + (", ..." if len(bad) > 3 else "")
        raise ValueError(
            f"{len(bad)} frame file(s) in {folder!r} are not named by an integer index "
            f"({shown}); {_FOLDER_HINT}")
    picked.sort(key=index.__getitem__)
    for a, b in zip(picked, picked[1:]):
        if index[a] == index[b]:
            raise ValueError(
                f"frames {a!r} and {b!r} in {folder!r} have the same index {index[a]}; "
                "keep one of them")
    return [os.path.join(folder, n) for n in picked]


def _open_folder(folder: str):
    paths = list_frame_files(folder)
    return "folder", (_read_image_file(p) for p in paths), len(paths), None, None


def _read_image_file(path: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return as_rgb_uint8(img)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad or truncated files
        raise ValueError(f"could not read frame {path!r} ({e}); is it a valid image?") from None


# --- PyAV: files, streams, cameras ----------------------------------------------------------


def _av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise ImportError("reading video files and cameras needs PyAV: pip install av") from None
    return av


def _open_av(target, kind: str, options, what: str, fmt: str | None = None, hint: str = ""):
    av = _av()
    try:
        container = av.open(target, mode="r", format=fmt, options=options or {})
    except (av.FFmpegError, OSError) as e:
        hint = hint or "is it a video file in a format FFmpeg can read (mp4, mov, mkv, ...)?"
        raise ValueError(f"could not open {what} ({_av_reason(e)}); {hint}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{what} has no video stream; pass a video file or a folder of frames")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-threaded decoding; frames still come out in order
    # 0 means unknown; a camera has no length even if the driver reports one.
    num_frames = None if kind == "camera" else (int(stream.frames) or None)
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    return kind, _decode(container, stream, what), num_frames, fps, container.close


def _decode(container, stream, what: str) -> Iterator[np.ndarray]:
    av = _av()
    i = 0
    try:
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
            i += 1
    except av.FFmpegError as e:
        raise ValueError(
            f"decoding {what} failed after {i} frames ({_av_reason(e)}); the file may be "
            "truncated or corrupt") from None
    finally:
        container.close()


def _open_camera(device: int | str, options):
    what = f"camera {device!r}"
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"camera index must be >= 0, got {device}")
        if sys.platform.startswith("linux"):
            device = f"/dev/video{device}"
        elif sys.platform == "darwin":
            device = str(device)
        else:
            raise ValueError(
                f"camera indices are supported on Linux (v4l2) and macOS (avfoundation), not "
                f"{sys.platform}; pass the device as a URL PyAV can open")
    fmt = "avfoundation" if sys.platform == "darwin" else "v4l2"
    hint = ("check that the camera is connected (ls /dev/video*), not in use by another "
            "program, and readable by you (the 'video' group)")
    kind, frames, _, fps, close = _open_av(device, "camera", options, what, fmt, hint)
    return kind, frames, None, fps, close


def _av_reason(e: Exception) -> str:
    # FFmpeg messages repeat the path and carry an errno; keep the readable part.
    return getattr(e, "strerror", None) or str(e)


# --- arrays and lists -----------------------------------------------------------------------


def _is_jax_array(x) -> bool:
    return type(x).__module__.startswith(("jax", "jaxlib"))


def _open_array(video: np.ndarray):
    if video.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 video array, got dtype {video.dtype}; convert first, e.g. "
            "(video * 255).round().astype(np.uint8) for floats in [0, 1]")
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        hint = " (one image? add a frame axis: image[None])" if video.ndim == 3 else ""
        raise ValueError(
            f"expected a video array [T, H, W, C] with C in (1, 3, 4), got shape "
            f"{video.shape}{hint}")
    if video.shape[0] == 0 or video.shape[1] == 0 or video.shape[2] == 0:
        raise ValueError(f"video array is empty (shape {video.shape})")
    frames = (_frame_to_rgb(f, f"frame {t}") for t, f in enumerate(video))
    return "array", frames, int(video.shape[0]), None, None


def _open_list(frames: Sequence[Any]):
    if len(frames) == 0:
        raise ValueError("the list of frames is empty")
    rgb = (_frame_to_rgb(f, f"frame {t}") for t, f in enumerate(frames))
    return "list", rgb, len(frames), None, None


def _frame_to_rgb(frame, what: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] from an HWC uint8 array (1, 3 or 4 channels, or HW) or PIL image."""
    if _is_jax_array(frame):
        frame = np.asarray(frame)
    try:
        return as_rgb_uint8(frame)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from None


def _same_size(frames: Iterator[np.ndarray], h: int, w: int, what: str):
    # Masks are mapped back to one (height, width) per video: a frame of another size would
    # be silently misaligned.
    for t, frame in enumerate(frames):
        if frame.shape[:2] != (h, w):
            raise ValueError(
                f"frame {t} of {what} is {frame.shape[0]}x{frame.shape[1]} but the video "
                f"starts at {h}x{w}; all frames must have the same size")
        yield frame


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (int, np.integer)):
        return f"camera {int(source)}"
    if isinstance(source, np.ndarray):
        return f"video array {source.shape}"
    return f"video source of type {type(source).__name__}"
