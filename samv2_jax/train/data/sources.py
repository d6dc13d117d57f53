"""Training datasets on disk, read lazily: a dataset lists its videos, a video lists its frames,
and frames and masks are read only when a clip asks for them.

Formats (the official training code's readers in `training/dataset/vos_raw_dataset.py` and
`vos_segment_loader.py` are the reference for what each one means):

- `VOSFolder`: DAVIS / YouTube-VOS / MOSE. `JPEGImages/VIDEO/00000.jpg ...` and
  `Annotations/VIDEO/00000.png`, palettized PNGs whose pixel value is the object id (0 is
  background); an optional file list (DAVIS `ImageSets/2017/train.txt`) picks the videos.
  The official `PNGRawDataset` + `PalettisedPNGSegmentLoader`.
- `SAVFolder`: SA-V. `VIDEO.mp4` (or a folder of its frames, `VIDEO/00000.jpg`) and
  `VIDEO_manual.json` / `VIDEO_auto.json`, whose `masklet` holds a COCO RLE per object every
  `ann_every` frames. The official `JSONRawDataset` + `JSONSegmentLoader`.
- `SA1BFolder`: SA-1B. `sa_N.jpg` + `sa_N.json` with an `annotations` list of RLE masks; each
  image is a clip of one frame. The official `SA1BRawDataset` + `SA1BSegmentLoader`.
- `COCOImages`: an image folder and a COCO instances json (polygons or RLE); each image is a
  clip of one frame whose objects are its annotations.

Every problem with the data is a `DataError` that names the file and says what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JPEG_SUFFIXES = (".jpg", ".jpeg")


class DataError(ValueError):
    """Training data that cannot be used as it is (the message names the file)."""


@dataclass(frozen=True)
class FrameRef:
    """One frame of a video: its index in the video and where its pixels are (an image file,
    or the video file it is decoded from)."""

    index: int
    path: str


# --- reading images ---------------------------------------------------------------------------


def read_rgb(path: str):
    """A PIL RGB image, as the official `load_images` opens it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, Image.open(f) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"frame {path!r} is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"frame {path!r} is not a readable image ({e})") from None


def image_size_of(path: str) -> tuple[int, int]:
    """(height, width) of an image file, from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise DataError(f"frame {path!r} is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"frame {path!r} is not a readable image ({e})") from None


def read_video_frames(path: str, indices: Sequence[int]) -> list:
    """The frames `indices` (0-based decode order) of a video file as PIL RGB images, decoding
    from the key frame before the first one wanted instead of from the start."""
    import av
    from PIL import Image

    wanted = sorted(set(int(i) for i in indices))
    got: dict[int, Image.Image] = {}
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise DataError(f"video {path!r} could not be opened ({e})") from None
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate or stream.time_base is None:
            raise DataError(f"video {path!r} has no frame rate; extract its frames to JPEGs")
        start = stream.start_time or 0

        def index_of(frame) -> int:
            return int(round(float((frame.pts - start) * stream.time_base * rate)))

        target = int(wanted[0] / rate / stream.time_base) + start
        container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            i = index_of(frame)
            if i in wanted and i not in got:
                got[i] = frame.to_image().convert("RGB")
            if i >= wanted[-1]:
                break
    except av.FFmpegError as e:
        raise DataError(f"decoding video {path!r} failed ({e})") from None
    finally:
        container.close()
    missing = [i for i in wanted if i not in got]
    if missing:
        raise DataError(f"video {path!r} has no frame {missing[0]} (frames are counted from 0); "
                        "the video is shorter than its annotations say")
    return [got[int(i)] for i in indices]


def count_video_frames(path: str) -> int:
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.demux(stream) if _.size)
    except (av.FFmpegError, OSError, IndexError) as e:
        raise DataError(f"video {path!r} could not be read ({e})") from None


# --- masks ------------------------------------------------------------------------------------


def read_label_png(path: str) -> np.ndarray:
    """[H, W] object ids of a palettized (or greyscale) PNG, checked against its palette."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "1":
                return np.array(im, dtype=np.uint8)
            if mode not in ("P", "L"):
                raise DataError(
                    f"mask {path!r} is a mode {mode!r} image; masks must be palettized PNGs "
                    "(mode 'P', object id = pixel value) or greyscale ('L')")
            labels = np.array(im, dtype=np.uint8)
            palette = im.getpalette() if mode == "P" else None
    except FileNotFoundError:
        raise DataError(f"mask {path!r} is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"mask {path!r} is not a readable PNG ({e})") from None
    if palette is not None:
        entries = len(palette) // 3
        top = int(labels.max(initial=0))
        if top >= entries:
            raise DataError(f"mask {path!r} has pixel value {top}, but its palette has only "
                            f"{entries} entries: the file is damaged or was not written as a "
                            "palettized label map")
    return labels


def labels_to_objects(labels: np.ndarray, obj_ids: Iterable[int] | None = None
                      ) -> dict[int, np.ndarray]:
    """{object id: [H, W] bool} for the ids present (or asked for) in a label map."""
    present = np.unique(labels)
    present = [int(v) for v in present if v != 0]
    if obj_ids is None:
        return {i: labels == i for i in present}
    return {int(i): labels == i for i in obj_ids if int(i) in present}


def decode_rle(rle, where: str) -> np.ndarray:
    from samv2_jax.io.outputs import rle_decode

    try:
        return rle_decode(rle)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: not a valid COCO RLE ({e})") from None


def _read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} {path!r} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path!r} is not valid JSON ({e})") from None


def _check_size(shape, size, where: str) -> None:
    if size is not None and tuple(shape) != tuple(size):
        raise DataError(f"mask {where} is {shape[1]}x{shape[0]}, but its frame is "
                        f"{size[1]}x{size[0]}")


class PaletteMasks:
    """Masks of one video as palettized PNGs, one per frame (`PalettisedPNGSegmentLoader`)."""

    lazy_objects = False

    def __init__(self, folder: str, files: dict[int, str]):
        self.folder = folder
        self.files = files

    def load(self, frame_index: int, obj_ids=None, size=None) -> dict[int, np.ndarray]:
        name = self.files.get(int(frame_index))
        if name is None:
            raise DataError(f"frame {frame_index} of {self.folder!r} has no mask PNG")
        path = os.path.join(self.folder, name)
        labels = read_label_png(path)
        _check_size(labels.shape, size, repr(path))
        return labels_to_objects(labels, obj_ids)


class MaskletMasks:
    """SA-V masklets: per annotated frame, one COCO RLE per object (`JSONSegmentLoader`)."""

    lazy_objects = False

    def __init__(self, path: str, frames: list, ann_every: int):
        self.path = path
        self.frames = frames  # per annotated frame: list of RLE (or None) per object
        self.ann_every = ann_every

    def annotated(self, frame_index: int) -> bool:
        i, r = divmod(int(frame_index), self.ann_every)
        return r == 0 and i < len(self.frames) and self.frames[i] is not None \
            and None not in self.frames[i]

    def load(self, frame_index: int, obj_ids=None, size=None) -> dict[int, np.ndarray]:
        i, r = divmod(int(frame_index), self.ann_every)
        if r or i >= len(self.frames) or self.frames[i] is None:
            raise DataError(f"{self.path!r} has no masks for frame {frame_index} "
                            f"(annotations every {self.ann_every} frames)")
        rles = self.frames[i]
        ids = range(len(rles)) if obj_ids is None else sorted(int(o) for o in obj_ids)
        out = {}
        for o in ids:
            if 0 <= o < len(rles) and rles[o] is not None:
                where = f"{self.path!r} frame {frame_index} object {o}"
                out[o] = decode_rle(rles[o], where)
                _check_size(out[o].shape, size, where)
        return out


class ImageMasks:
    """The masks of one image, decoded only when asked for (`SA1BSegmentLoader`'s
    `LazySegments`): every listed object counts as visible without decoding it."""

    lazy_objects = True

    def __init__(self, where: str, objects: list):
        self.where = where
        self.objects = objects  # per object: an RLE dict or COCO polygons with the image size

    def ids(self) -> list[int]:
        return list(range(len(self.objects)))

    def load(self, frame_index: int, obj_ids=None, size=None) -> dict[int, np.ndarray]:
        ids = self.ids() if obj_ids is None else [int(o) for o in obj_ids]
        out = {o: self._decode(o) for o in ids if 0 <= o < len(self.objects)}
        for o, m in out.items():
            _check_size(m.shape, size, f"{self.where} object {o}")
        return out

    def _decode(self, o: int) -> np.ndarray:
        seg = self.objects[o]
        where = f"{self.where} object {o}"
        if isinstance(seg, dict) and "polygons" in seg:
            return _polygons_to_mask(seg["polygons"], seg["height"], seg["width"], where)
        return decode_rle(seg, where)


def _polygons_to_mask(polygons, height: int, width: int, where: str) -> np.ndarray:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ImportError(f"{where} is a COCO polygon; decoding polygons needs pycocotools "
                          "(pip install pycocotools)") from None
    try:
        rles = mask_utils.frPyObjects(polygons, int(height), int(width))
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    except (TypeError, ValueError, IndexError) as e:
        raise DataError(f"{where}: not valid COCO polygons ({e})") from None


@dataclass
class Video:
    """One video (or image) of a dataset: its frames and how to read them."""

    name: str
    frames: list[FrameRef]
    masks: object  # .load(frame_index, obj_ids=None) -> {id: [H, W] bool}, .lazy_objects
    video_file: str | None = None  # frames decoded from this file instead of image files

    def read_images(self, frames: Sequence[FrameRef]) -> list:
        if self.video_file is not None:
            return read_video_frames(self.video_file, [f.index for f in frames])
        cache: dict[str, object] = {}
        out = []
        for f in frames:
            if f.path not in cache:  # an image repeated as frames is read once
                cache[f.path] = read_rgb(f.path)
            out.append(cache[f.path].copy())
        return out


# --- listing ----------------------------------------------------------------------------------


def _read_list(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [os.path.splitext(line.strip())[0] for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"file list {path!r} is missing") from None


def _select(names: Iterable[str], file_list: str | None, excluded: str | None,
            where: str) -> list[str]:
    names = sorted(set(names))
    if file_list is not None:
        listed = _read_list(file_list)
        unknown = [n for n in listed if n not in set(names)]
        if unknown:
            raise DataError(f"file list {file_list!r} names {len(unknown)} video(s) not in "
                            f"{where!r}, e.g. {unknown[0]!r}")
        names = sorted(set(listed))
    if excluded is not None:
        drop = set(_read_list(excluded))
        names = [n for n in names if n not in drop]
    if not names:
        raise DataError(f"no videos found in {where!r}")
    return names


def _frame_number(name: str, folder: str) -> int:
    try:
        return int(os.path.splitext(name)[0])
    except ValueError:
        raise DataError(f"{os.path.join(folder, name)!r} is not named by its frame number "
                        "(00000.jpg, 00001.jpg, ...)") from None


def _numbered(folder: str, suffixes: tuple[str, ...], what: str) -> dict[int, str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise DataError(f"{what} folder {folder!r} is missing") from None
    out: dict[int, str] = {}
    for n in names:
        if os.path.splitext(n)[1].lower() in suffixes:
            i = _frame_number(n, folder)
            if i in out:
                raise DataError(f"{os.path.join(folder, n)!r} and {out[i]!r} in {folder!r} are "
                                f"both frame {i}")
            out[i] = n
    return out


def _resolution_dir(folder: Path) -> Path:
    """DAVIS keeps its videos one level down, in `480p/` or `Full-Resolution/`."""
    for sub in ("480p", "Full-Resolution", "1080p"):
        if (folder / sub).is_dir():
            return folder / sub
    return folder


class VOSFolder:
    """DAVIS / YouTube-VOS / MOSE: frames in `JPEGImages/VIDEO/`, palettized masks in
    `Annotations/VIDEO/` with the same frame numbers (the official `PNGRawDataset`).

    `root` may be the dataset folder (with `JPEGImages/` and `Annotations/`, possibly under
    `split/` as YouTube-VOS and MOSE have them), or give `img_folder` and `gt_folder`. `split`
    picks the videos of `ImageSets/*/SPLIT.txt` (DAVIS) or the `SPLIT/` sub-folder;
    `file_list` / `excluded` are text files of video names.
    """

    kind = "video"

    def __init__(self, root: str | None = None, *, img_folder: str | None = None,
                 gt_folder: str | None = None, split: str | None = None,
                 file_list: str | None = None, excluded: str | None = None,
                 sample_rate: int = 1, truncate_video: int = -1):
        file_list = file_list
        if root is not None:
            base = Path(root).expanduser()
            if not base.is_dir():
                raise DataError(f"dataset folder {str(base)!r} does not exist")
            if split is not None and (base / split / "JPEGImages").is_dir():
                base = base / split
            elif split is not None and file_list is None:
                lists = sorted(base.glob(f"ImageSets/*/{split}.txt")) or sorted(
                    base.glob(f"ImageSets/{split}.txt"))
                if not lists:
                    raise DataError(f"split {split!r}: neither {str(base / split)!r} nor an "
                                    f"ImageSets/*/{split}.txt file list exists")
                file_list = str(lists[-1])  # the newest year (DAVIS 2017 over 2016)
            img_folder = img_folder or str(_resolution_dir(base / "JPEGImages"))
            gt_folder = gt_folder or str(_resolution_dir(base / "Annotations"))
        if img_folder is None or gt_folder is None:
            raise ValueError("VOSFolder needs a root folder or both img_folder and gt_folder")
        for what, folder in (("frames", img_folder), ("annotations", gt_folder)):
            if not os.path.isdir(folder):
                raise DataError(f"{what} folder {folder!r} does not exist")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
        self.img_folder, self.gt_folder = str(img_folder), str(gt_folder)
        self.sample_rate, self.truncate_video = int(sample_rate), int(truncate_video)
        found = [n for n in os.listdir(self.img_folder)
                 if os.path.isdir(os.path.join(self.img_folder, n))]
        self.names = _select(found, file_list, excluded, self.img_folder)

    def __len__(self) -> int:
        return len(self.names)

    def video(self, i: int) -> Video:
        name = self.names[i]
        frame_dir = os.path.join(self.img_folder, name)
        mask_dir = os.path.join(self.gt_folder, name)
        jpgs = _numbered(frame_dir, JPEG_SUFFIXES, "frames")
        pngs = _numbered(mask_dir, (".png",), "annotations")
        if not jpgs:
            raise DataError(f"video {name!r} is empty: no .jpg frames in {frame_dir!r}")
        orphans = sorted(set(pngs) - set(jpgs))
        if orphans:
            raise DataError(f"frame {orphans[0]} of video {name!r} is missing: "
                            f"{os.path.join(mask_dir, pngs[orphans[0]])!r} has no "
                            f"{frame_dir}/{orphans[0]:05d}.jpg")
        indices = sorted(jpgs)
        if self.truncate_video > 0:
            indices = indices[: self.truncate_video]
        indices = indices[:: self.sample_rate]
        unmasked = [k for k in indices if k not in pngs]
        if unmasked:
            raise DataError(f"frame {os.path.join(frame_dir, jpgs[unmasked[0]])!r} has no mask "
                            f"in {mask_dir!r} ({len(unmasked)} frame(s) of {name!r} have none)")
        frames = [FrameRef(k, os.path.join(frame_dir, jpgs[k])) for k in indices]
        return Video(name, frames, PaletteMasks(mask_dir, pngs))


class SAVFolder:
    """SA-V: `VIDEO.mp4` (or frames `VIDEO/00000.jpg`, numbered in the video's frame order)
    and its masklets `VIDEO_manual.json` (and/or `VIDEO_auto.json`), annotated every
    `ann_every` frames (4: SA-V's 6 fps annotations of 24 fps videos). Only annotated frames
    are used (the official `JSONRawDataset` with `rm_unannotated=True`)."""

    kind = "video"

    def __init__(self, root: str, *, gt_folder: str | None = None, masklets: str = "manual",
                 ann_every: int = 4, file_list: str | None = None, excluded: str | None = None,
                 sample_rate: int = 1):
        base = Path(root).expanduser()
        if not base.is_dir():
            raise DataError(f"dataset folder {str(base)!r} does not exist")
        if masklets not in ("manual", "auto", "both"):
            raise ValueError(f"masklets must be 'manual', 'auto' or 'both', got {masklets!r}")
        if ann_every < 1 or sample_rate < 1:
            raise ValueError("ann_every and sample_rate must be >= 1")
        self.root = str(base)
        self.gt_folder = str(Path(gt_folder).expanduser()) if gt_folder else self.root
        self.masklets, self.ann_every, self.sample_rate = masklets, int(ann_every), sample_rate
        suffix = "_auto.json" if masklets == "auto" else "_manual.json"
        found = [n[: -len(suffix)] for n in os.listdir(self.gt_folder) if n.endswith(suffix)]
        self.names = _select(found, file_list, excluded, self.gt_folder)

    def __len__(self) -> int:
        return len(self.names)

    def _masklets(self, name: str) -> list:
        kinds = ("manual", "auto") if self.masklets == "both" else (self.masklets,)
        per_frame = None
        for kind in kinds:
            path = os.path.join(self.gt_folder, f"{name}_{kind}.json")
            data = _read_json(path, "masklet file")
            frames = data.get("masklet", data.get("masks")) if isinstance(data, dict) else data
            if not isinstance(frames, list):
                raise DataError(f"{path!r} has no 'masklet' list")
            if per_frame is None:
                per_frame = [list(f) if f is not None else None for f in frames]
            else:  # auto masklets follow the manual ones, frame by frame
                n = max(len(per_frame), len(frames))
                per_frame = [(per_frame[i] if i < len(per_frame) else None) or []
                             for i in range(n)]
                for i, f in enumerate(frames):
                    per_frame[i] = per_frame[i] + list(f or [])
        return per_frame

    def video(self, i: int) -> Video:
        name = self.names[i]
        json_path = os.path.join(self.gt_folder, f"{name}_{self.masklets}.json"
                                 if self.masklets != "both" else f"{name}_manual.json")
        masks = MaskletMasks(json_path, self._masklets(name), self.ann_every)
        mp4 = os.path.join(self.root, f"{name}.mp4")
        frame_dir = os.path.join(self.root, name)
        if os.path.isdir(frame_dir):
            jpgs = _numbered(frame_dir, JPEG_SUFFIXES, "frames")
            indices = sorted(jpgs)[:: self.sample_rate]
            frames = [FrameRef(k, os.path.join(frame_dir, jpgs[k])) for k in indices]
            video_file = None
        elif os.path.isfile(mp4):
            n = count_video_frames(mp4)
            frames = [FrameRef(k, mp4) for k in range(0, n, self.sample_rate)]
            video_file = mp4
        else:
            raise DataError(f"video {name!r}: neither {mp4!r} nor a frame folder {frame_dir!r}")
        if not frames:
            raise DataError(f"video {name!r} is empty (no frames in "
                            f"{video_file or frame_dir!r})")
        annotated = [f for f in frames if masks.annotated(f.index)]
        last = (len(masks.frames) - 1) * self.ann_every
        if video_file is None and last >= 0 and masks.annotated(last) and \
                last not in {f.index for f in frames}:
            raise DataError(f"frame {last} of video {name!r} is missing: {json_path!r} has "
                            f"masks for it but {frame_dir!r} has no {last:05d}.jpg")
        return Video(name, annotated, masks, video_file=video_file)


class SA1BFolder:
    """SA-1B: `sa_N.jpg` and `sa_N.json` (`annotations`: COCO RLE `segmentation`, `area`,
    ...); each image is a one-frame clip (the official `SA1BRawDataset`). Masks with zero area,
    with `uncertain_iou` below the threshold or covering at least `mask_area_frac_thresh` of the
    image are left out, as there."""

    kind = "image"

    def __init__(self, root: str, *, gt_folder: str | None = None, file_list: str | None = None,
                 excluded: str | None = None, mask_area_frac_thresh: float = 1.1,
                 uncertain_iou: float = -1.0, num_frames: int = 1):
        base = Path(root).expanduser()
        if not base.is_dir():
            raise DataError(f"dataset folder {str(base)!r} does not exist")
        self.img_folder = str(base)
        self.gt_folder = str(Path(gt_folder).expanduser()) if gt_folder else self.img_folder
        self.mask_area_frac_thresh = float(mask_area_frac_thresh)
        self.uncertain_iou = float(uncertain_iou)
        self.num_frames = int(num_frames)
        found = [os.path.splitext(n)[0] for n in os.listdir(self.img_folder)
                 if n.lower().endswith(".jpg")]
        self.names = _select(found, file_list, excluded, self.img_folder)

    def __len__(self) -> int:
        return len(self.names)

    def video(self, i: int) -> Video:
        name = self.names[i]
        image = os.path.join(self.img_folder, name + ".jpg")
        json_path = os.path.join(self.gt_folder, name + ".json")
        data = _read_json(json_path, "annotation file")
        anns = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(anns, list):
            raise DataError(f"{json_path!r} has no 'annotations' list")
        area = None
        if self.mask_area_frac_thresh <= 1.0:
            h, w = image_size_of(image)
            area = h * w
        objects = []
        for k, ann in enumerate(anns):
            try:
                a = float(ann["area"])
                seg = ann["segmentation"]
            except (KeyError, TypeError):
                raise DataError(f"{json_path!r} annotation {k} has no 'area' or "
                                "'segmentation'") from None
            if not a > 0:
                continue
            if "uncertain_iou" in ann and ann["uncertain_iou"] < self.uncertain_iou:
                continue
            if area is not None and a / area >= self.mask_area_frac_thresh:
                continue
            objects.append(seg)
        frames = [FrameRef(t, image) for t in range(self.num_frames)]
        return Video(name, frames, ImageMasks(json_path, objects))


class COCOImages:
    """COCO-style instances: `images` + `annotations` (polygons or RLE) in one json, images in
    `img_folder`; each image is a one-frame clip of its annotated objects. Crowd regions
    (`iscrowd`) are not single objects and are left out unless `include_crowd`."""

    kind = "image"

    def __init__(self, img_folder: str, annotations: str, *, include_crowd: bool = False,
                 min_area: float = 0.0, file_list: str | None = None,
                 excluded: str | None = None):
        if not os.path.isdir(img_folder):
            raise DataError(f"image folder {img_folder!r} does not exist")
        data = _read_json(annotations, "annotation file")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise DataError(f"{annotations!r} is not a COCO instances file ('images' and "
                            "'annotations' lists)")
        self.img_folder, self.annotations = str(img_folder), str(annotations)
        self.images: dict[str, dict] = {}
        by_id = {}
        for img in data["images"]:
            try:
                stem = os.path.splitext(img["file_name"])[0]
                by_id[img["id"]] = stem
                self.images[stem] = {"file": img["file_name"], "height": int(img["height"]),
                                     "width": int(img["width"]), "objects": []}
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{annotations!r}: an image entry lacks id, file_name, height "
                                "or width") from None
        for k, ann in enumerate(data["annotations"]):
            stem = by_id.get(ann.get("image_id"))
            if stem is None:
                raise DataError(f"{annotations!r} annotation {k} names image_id "
                                f"{ann.get('image_id')!r}, which is not in 'images'")
            if ann.get("iscrowd") and not include_crowd:
                continue
            if not float(ann.get("area", 1.0)) > min_area:
                continue
            seg = ann.get("segmentation")
            entry = self.images[stem]
            if isinstance(seg, list):
                seg = {"polygons": seg, "height": entry["height"], "width": entry["width"]}
            elif not isinstance(seg, dict):
                raise DataError(f"{annotations!r} annotation {k} has no segmentation")
            entry["objects"].append(seg)
        names = [s for s, e in self.images.items() if e["objects"]]
        self.names = _select(names, file_list, excluded, annotations)

    def __len__(self) -> int:
        return len(self.names)

    def video(self, i: int) -> Video:
        name = self.names[i]
        entry = self.images[name]
        path = os.path.join(self.img_folder, entry["file"])
        return Video(name, [FrameRef(0, path)],
                     ImageMasks(f"{self.annotations!r} image {entry['file']!r}",
                                entry["objects"]))


# --- from a spec string -----------------------------------------------------------------------

KINDS = {"davis": VOSFolder, "ytvos": VOSFolder, "mose": VOSFolder, "vos": VOSFolder,
         "sav": SAVFolder, "sa1b": SA1BFolder, "coco": COCOImages}


def open_source(kind: str, path: str, **options):
    """The dataset reader of a kind (`davis`, `ytvos`, `mose`, `vos`, `sav`, `sa1b`, `coco`)."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of "
                         f"{', '.join(sorted(KINDS))}") from None
    if cls is COCOImages:
        ann = options.pop("annotations", None)
        if ann is None:
            raise ValueError("a coco dataset needs annotations=PATH (the instances json)")
        return cls(path, ann, **options)
    try:
        return cls(path, **options)
    except TypeError as e:
        raise ValueError(f"dataset {kind}:{path}: {e}") from None
