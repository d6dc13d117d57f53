"""From a video on disk to one training clip: which frames, which objects, and their pixels.

The official `RandomUniformSampler` (`training/dataset/vos_sampler.py`) and
`VOSDataset.construct` (`vos_dataset.py`): a random contiguous window of `num_frames` frames,
reversed in time with probability `reverse_time_prob`, re-drawn until its first frame shows an
object; then up to `max_num_objects` of the objects visible in that first frame, in random
order. An object absent from a later frame gets an empty mask there (`always_target`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from samv2_jax.train.data.augment import AugmentConfig, apply_params, draw_params
from samv2_jax.train.data.sources import DataError, FrameRef, Video

MAX_WINDOW_TRIES = 1000  # the official sampler's MAX_RETRIES


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from one dataset (official defaults of the MOSE recipe)."""

    num_frames: int = 8
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0
    image_size: int = 1024
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.num_frames < 1 or self.max_num_objects < 1:
            raise ValueError("num_frames and max_num_objects must be >= 1, got "
                             f"{self.num_frames} and {self.max_num_objects}")
        if not 0.0 <= self.reverse_time_prob <= 1.0:
            raise ValueError(f"reverse_time_prob must be within [0, 1], got "
                             f"{self.reverse_time_prob}")


def visible_objects(video: Video, frame: FrameRef) -> list[int]:
    masks = video.masks
    if getattr(masks, "lazy_objects", False):
        return masks.ids()  # image datasets: every listed mask counts (not decoded here)
    return sorted(i for i, m in masks.load(frame.index).items() if m.any())


def sample_frames_and_objects(video: Video, cfg: ClipConfig, rng: np.random.Generator
                              ) -> tuple[list[FrameRef], list[int]]:
    n, t = len(video.frames), cfg.num_frames
    if n == 0:
        raise DataError(f"video {video.name!r} has no annotated frames")
    if n < t:
        raise DataError(f"video {video.name!r} has {n} annotated frame(s), fewer than "
                        f"num_frames={t}")
    for _ in range(MAX_WINDOW_TRIES):
        start = int(rng.integers(0, n - t + 1))
        frames = video.frames[start: start + t]
        if rng.random() < cfg.reverse_time_prob:
            frames = frames[::-1]
        visible = visible_objects(video, frames[0])
        if visible:
            break
    else:
        raise DataError(f"video {video.name!r}: no object is visible in the first frame of "
                        f"{MAX_WINDOW_TRIES} random windows of {t} frames")
    k = min(len(visible), cfg.max_num_objects)
    chosen = rng.choice(len(visible), size=k, replace=False)
    return list(frames), [visible[int(i)] for i in chosen]


def load_masks(video: Video, frames: list[FrameRef], obj_ids: list[int],
               sizes: list[tuple[int, int]]) -> np.ndarray:
    """[T, O, H, W] uint8 masks of the chosen objects (zeros where an object is absent)."""
    h, w = sizes[0]
    out = np.zeros((len(frames), len(obj_ids), h, w), np.uint8)
    for t, (frame, size) in enumerate(zip(frames, sizes)):
        if size != (h, w):
            raise DataError(f"frame {frame.path!r} is {size[1]}x{size[0]}, but the first frame "
                            f"of the clip is {w}x{h}: frames of a video must have one size")
        found = video.masks.load(frame.index, obj_ids, size=(h, w))
        for o, obj in enumerate(obj_ids):
            m = found.get(obj)
            if m is not None:
                out[t, o] = m
    return out


def make_clip(video: Video, cfg: ClipConfig, rng: np.random.Generator) -> dict:
    """One clip: uint8 `images` [T, S, S, 3], bool `masks` [T, O, S, S] padded to
    `max_num_objects`, `obj_valid` [O], `obj_ids` [O] (-1 = padding), `frame_idx` [T]."""
    frames, obj_ids = sample_frames_and_objects(video, cfg, rng)
    images = video.read_images(frames)
    sizes = [(im.height, im.width) for im in images]
    masks = load_masks(video, frames, obj_ids, sizes)
    params = None
    if cfg.augment is not None:
        params = draw_params(rng, cfg.augment, len(frames))
    pixels, masks, _ = apply_params(images, masks, params, cfg.augment or AugmentConfig(),
                                    cfg.image_size)
    o_max, k = cfg.max_num_objects, len(obj_ids)
    t, s = len(frames), cfg.image_size
    padded = np.zeros((t, o_max, s, s), bool)
    padded[:, :k] = masks
    ids = np.full((o_max,), -1, np.int32)
    ids[:k] = obj_ids
    return {"images": pixels, "masks": padded, "obj_valid": np.arange(o_max) < k,
            "obj_ids": ids, "frame_idx": np.asarray([f.index for f in frames], np.int32)}
