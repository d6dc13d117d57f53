"""The training data pipeline on grain: datasets named by spec strings, clips cut and augmented
in worker processes, batches mixed across datasets, an iterator whose state is checkpointed.

Per dataset (its own batch shape, so its own compiled step):

    indices 0..N-1 -> shuffle (a new order every epoch) -> repeat forever
      -> this host's shard ([process_index::process_count])
      -> random_map(make a clip)   # the clip's randomness comes from (seed, position) only
      -> worker processes (order kept) -> batch

and the datasets' batch streams are mixed with weights (grain's deterministic weighted mix;
the official `MixedDataLoader` draws the dataset of each step at random with the same
probabilities; by default, as there, proportional to each dataset's number of batches). A
clip depends only on the seed and its position in the stream, not on the number of workers or
hosts, so a restored iterator continues with exactly the clips an uninterrupted run would see.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from samv2_jax.train.data.augment import NO_AUGMENT, AugmentConfig
from samv2_jax.train.data.clips import ClipConfig, make_clip
from samv2_jax.train.data.sources import KINDS, DataError, open_source

log = logging.getLogger("samv2_jax.train.data")

MAX_SKIPS = 100  # bad videos tried in a row before giving up (the official MAX_RETRIES)
IMAGE_KINDS = ("sa1b", "coco")


@dataclass(frozen=True)
class DataSpec:
    """One dataset of a run: `kind:path[,key=value...]` on the command line.

    `weight` is its share of the steps (default: proportional to its number of batches, as the
    official mixed loader); `batch_size` its global batch (default: the run's); `num_frames`
    (default 8 for videos, 1 for images), `max_num_objects` (3 for videos, 16 for images) and
    `reverse_time_prob` how its clips are cut; `multiplier` repeats it (the official repeat
    factor). Everything else (split, file_list, ann_every, annotations, ...) goes to the
    reader.
    """

    kind: str
    path: str
    weight: float | None = None
    batch_size: int | None = None
    num_frames: int | None = None
    max_num_objects: int | None = None
    reverse_time_prob: float = 0.0
    multiplier: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.path}"

    def open(self):
        return open_source(self.kind, self.path, **dict(self.options))

    def clip_config(self, image_size: int, augment: AugmentConfig | None,
                    num_frames: int = 8, max_num_objects: int = 3) -> ClipConfig:
        if self.is_image:
            frames = self.num_frames or 1
            objects = self.max_num_objects or 16
        else:
            frames = self.num_frames or num_frames
            objects = self.max_num_objects or max_num_objects
        return ClipConfig(num_frames=frames, max_num_objects=objects,
                          reverse_time_prob=self.reverse_time_prob, image_size=image_size,
                          augment=augment)


_SPEC_FIELDS = {"weight": float, "batch_size": int, "num_frames": int, "max_num_objects": int,
                "reverse_time_prob": float, "multiplier": float}


def _option_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_data_spec(spec) -> DataSpec:
    """`davis:/data/DAVIS,split=train,weight=2` (or a dict / DataSpec) -> DataSpec."""
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, dict):
        d = dict(spec)
        try:
            kind, path = d.pop("kind"), d.pop("path")
        except KeyError:
            raise ValueError(f"a dataset needs 'kind' and 'path', got {spec!r}") from None
        fields = {k: _SPEC_FIELDS[k](d.pop(k)) for k in list(d) if k in _SPEC_FIELDS}
        options = dict(d.pop("options", {}) or {})
        options.update(d)
        return _checked(DataSpec(kind=str(kind), path=str(path), **fields,
                                 options=tuple(sorted(options.items()))))
    text = str(spec)
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"dataset {text!r}: expected KIND:PATH[,key=value...] with KIND one of "
                         f"{', '.join(sorted(KINDS))}")
    path, *pairs = rest.split(",")
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"dataset {text!r}: {pair!r} is not key=value")
        key = key.strip()
        if key in _SPEC_FIELDS:
            try:
                fields[key] = _SPEC_FIELDS[key](value)
            except ValueError:
                raise ValueError(f"dataset {text!r}: {key}={value!r} is not a number") from None
        else:
            options[key] = _option_value(value)
    return _checked(DataSpec(kind=kind.strip(), path=path, **fields,
                             options=tuple(sorted(options.items()))))


def _checked(spec: DataSpec) -> DataSpec:
    if spec.kind not in KINDS:
        raise ValueError(f"dataset {spec.name!r}: unknown kind {spec.kind!r}; use one of "
                         f"{', '.join(sorted(KINDS))}")
    if spec.weight is not None and not spec.weight > 0:
        raise ValueError(f"dataset {spec.name!r}: weight must be > 0, got {spec.weight}")
    return spec


# --- one clip per stream position -------------------------------------------------------------


class ClipMaker:
    """grain `random_map` of a dataset: video index -> clip. With `skip_bad_data`, a video whose
    data is broken is logged and replaced by another one drawn from the same generator (the
    official retries a random video); the clip records how many were skipped."""

    def __init__(self, source, cfg: ClipConfig, dataset_index: int, skip_bad_data: bool,
                 name: str):
        self.source, self.cfg = source, cfg
        self.dataset_index, self.skip_bad_data, self.name = dataset_index, skip_bad_data, name

    def __call__(self, index, rng: np.random.Generator) -> dict:
        index = int(index)
        skipped = 0
        while True:
            try:
                clip = make_clip(self.source.video(index), self.cfg, rng)
                break
            except DataError as e:
                if not self.skip_bad_data:
                    raise DataError(f"{self.name}: {e} (pass skip_bad_data=True / "
                                    "--skip-bad-data to skip such videos)") from None
                skipped += 1
                log.warning("%s: skipping video %d: %s", self.name, index, e)
                if skipped >= MAX_SKIPS:
                    raise DataError(f"{self.name}: {skipped} videos in a row could not be "
                                    f"used; the last: {e}") from None
                index = int(rng.integers(len(self.source)))
        clip["video"] = np.int32(index)
        clip["dataset"] = np.int32(self.dataset_index)
        clip["skipped"] = np.int32(skipped)
        return clip


class _Modulo:
    def __init__(self, n: int):
        self.n = n

    def __call__(self, i):
        return int(i) % self.n


@dataclass(frozen=True)
class LoaderConfig:
    global_batch_size: int = 1
    seed: int = 0
    image_size: int = 1024
    num_frames: int = 8
    max_num_objects: int = 3
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    num_workers: int = 0
    read_threads: int = 2  # clips made at once by each reader (main process or worker)
    prefetch: int = 4  # clips each reader keeps ready
    skip_bad_data: bool = False
    process_index: int = 0
    process_count: int = 1


def _per_host(batch: int, process_count: int, what: str) -> int:
    if batch < 1 or batch % process_count:
        raise ValueError(f"{what} {batch} must be a positive multiple of the number of hosts "
                         f"({process_count}): every host reads its own equal share")
    return batch // process_count


def dataset_stream(spec: DataSpec, source, cfg: LoaderConfig, dataset_index: int,
                   batched: bool = True):
    """The grain IterDataset of one dataset's batches (this host's share of each)."""
    import grain

    clip_cfg = spec.clip_config(cfg.image_size, cfg.augment, cfg.num_frames,
                                cfg.max_num_objects)
    n = len(source)
    # A multiplier of 2 lists every video twice per epoch (fractions: the first part again).
    per_epoch = max(1, int(round(n * spec.multiplier)))
    seed = int(cfg.seed) * 1000 + dataset_index
    ds = grain.MapDataset.range(per_epoch).map(_Modulo(n))
    ds = ds.shuffle(seed=seed).repeat()
    ds = ds[cfg.process_index::cfg.process_count]
    ds = ds.random_map(ClipMaker(source, clip_cfg, dataset_index, cfg.skip_bad_data,
                                 spec.name), seed=seed + 1)
    # A few clips in flight per reader: grain's default (16 threads, 500 elements) would hold
    # gigabytes of 1024-pixel clips.
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                              prefetch_buffer_size=cfg.prefetch))
    if cfg.num_workers > 0:
        _absl_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
    if batched:
        batch = spec.batch_size or cfg.global_batch_size
        it = it.batch(_per_host(batch, cfg.process_count, f"batch size of {spec.name}"),
                      drop_remainder=True)
    return it


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app nobody parses them."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def default_weights(specs, sources, cfg: LoaderConfig) -> list[float]:
    """Explicit weights, else the official default: each dataset's batches per epoch."""
    out = []
    for spec, src in zip(specs, sources):
        if spec.weight is not None:
            out.append(float(spec.weight))
        else:
            batch = spec.batch_size or cfg.global_batch_size
            out.append(max(1.0, len(src) * spec.multiplier / batch))
    return out


def make_train_stream(specs, cfg: LoaderConfig):
    """(grain IterDataset of host-local batches, the opened sources, the mixing weights)."""
    import grain

    specs = [parse_data_spec(s) for s in specs]
    if not specs:
        raise ValueError("no training data: give at least one dataset (--data KIND:PATH)")
    sources = [s.open() for s in specs]
    streams = [dataset_stream(s, src, cfg, i) for i, (s, src) in enumerate(zip(specs, sources))]
    weights = default_weights(specs, sources, cfg)
    if len(streams) == 1:
        return streams[0], sources, weights
    return grain.IterDataset.mix(streams, weights), sources, weights


def eval_clips(spec, image_size: int, max_videos: int | None = None,
               max_frames: int | None = None, max_num_objects: int = 16):
    """Held-out videos for validation: every annotated frame from the start (up to
    `max_frames`), every object of the first frame, frames and masks at their own size.
    Yields (name, frames [T, H, W, 3] uint8, masks [T, O, H, W] bool, object ids)."""
    from samv2_jax.train.data.clips import load_masks, visible_objects

    spec = parse_data_spec(spec)
    source = spec.open()
    count = len(source) if max_videos is None else min(len(source), int(max_videos))
    for i in range(count):
        video = source.video(i)
        frames = video.frames[: max_frames] if max_frames else video.frames
        ids = visible_objects(video, frames[0])[:max_num_objects]
        if not ids:
            continue
        images = video.read_images(frames)
        sizes = [(im.height, im.width) for im in images]
        masks = load_masks(video, frames, ids, sizes).astype(bool)
        pixels = np.stack([np.asarray(im, np.uint8) for im in images])
        yield video.name, pixels, masks, ids


def no_augment(cfg: LoaderConfig) -> LoaderConfig:
    return replace(cfg, augment=NO_AUGMENT)
