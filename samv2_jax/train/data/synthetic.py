"""Small datasets of objects with known masks moving over real backgrounds, written in the
formats the readers take (DAVIS folders, SA-V mp4 + masklet json, SA-1B image + json).

For tests, examples and the fine-tuning benchmark: every mask is exact by construction, the
frames look like video (a slowly panning background, textured objects that move, turn, change
size and pass in front of each other).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def default_backgrounds() -> list[np.ndarray]:
    """Photographs scikit-image ships (when it is installed), else smooth random textures."""
    try:
        from skimage import data
    except ImportError:
        rng = np.random.default_rng(0)
        out = []
        for _ in range(4):
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            from PIL import Image

            out.append(np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC)))
        return out
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina")
    out = []
    for n in names:
        img = getattr(data, n, None)
        if img is None:
            continue
        try:
            a = np.asarray(img())
        except Exception:  # a data file that scikit-image would have to download
            continue
        if a.ndim == 3 and a.shape[2] >= 3:
            out.append(np.ascontiguousarray(a[..., :3].astype(np.uint8)))
    return out


def _crop(img: np.ndarray, y: float, x: float, h: int, w: int, zoom: float) -> np.ndarray:
    from PIL import Image

    ih, iw = img.shape[:2]
    ch, cw = min(ih, int(h * zoom)), min(iw, int(w * zoom))
    y0 = int(np.clip(y, 0, ih - ch))
    x0 = int(np.clip(x, 0, iw - cw))
    patch = Image.fromarray(img[y0: y0 + ch, x0: x0 + cw])
    return np.asarray(patch.resize((w, h), Image.BILINEAR))


def moving_objects_video(rng: np.random.Generator, num_frames: int, height: int, width: int,
                         num_objects: int, backgrounds: list[np.ndarray] | None = None):
    """(frames [T, H, W, 3] uint8, labels [T, H, W] uint8 with ids 1..num_objects)."""
    backgrounds = backgrounds or default_backgrounds()
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    zoom = float(rng.uniform(0.6, 1.0)) * min(bg.shape[0] / height, bg.shape[1] / width)
    by, bx = rng.uniform(0, 1, 2) * (np.asarray(bg.shape[:2]) - np.asarray([height, width]) * zoom)
    bvy, bvx = rng.uniform(-2, 2, 2)
    objs = []
    for _ in range(num_objects):
        tex_src = backgrounds[int(rng.integers(len(backgrounds)))]
        r = float(rng.uniform(0.12, 0.22)) * min(height, width)
        objs.append({
            "tex": _crop(tex_src, *(rng.uniform(0, 1, 2) * np.asarray(tex_src.shape[:2]) * 0.5),
                         height, width, 0.5),
            "tint": rng.uniform(0.6, 1.4, 3),
            "c": rng.uniform([r, r], [height - r, width - r]),
            "v": rng.uniform(-1, 1, 2) * min(height, width) * 0.04,
            "ax": np.asarray([r, r * float(rng.uniform(0.5, 1.0))]),
            "rot": float(rng.uniform(0, np.pi)), "spin": float(rng.uniform(-0.15, 0.15)),
            "grow": float(rng.uniform(-0.01, 0.01)),
            "square": bool(rng.random() < 0.5),
        })
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        img = _crop(bg, by + bvy * t, bx + bvx * t, height, width, zoom).astype(np.float32)
        lab = np.zeros((height, width), np.uint8)
        for k, o in enumerate(objs):
            cy, cx = o["c"]
            ca, sa = np.cos(o["rot"]), np.sin(o["rot"])
            dy, dx = yy - cy, xx - cx
            u = (dx * ca + dy * sa) / o["ax"][0]
            v = (-dx * sa + dy * ca) / o["ax"][1]
            inside = (np.maximum(np.abs(u), np.abs(v)) < 1) if o["square"] else (u * u + v * v < 1)
            img[inside] = np.clip(o["tex"][inside] * o["tint"], 0, 255)
            lab[inside] = k + 1
            # move, bounce off the borders, turn and change size for the next frame
            o["c"] = o["c"] + o["v"]
            for d, size in ((0, height), (1, width)):
                if not 0 <= o["c"][d] < size:
                    o["v"][d] = -o["v"][d]
                    o["c"][d] = np.clip(o["c"][d], 0, size - 1)
            o["rot"] += o["spin"]
            o["ax"] = o["ax"] * (1 + o["grow"])
        frames[t] = img.astype(np.uint8)
        labels[t] = lab
    return frames, labels


def write_label_png(path, labels: np.ndarray) -> None:
    from PIL import Image

    from samv2_jax.io.outputs import PALETTE

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE.astype(np.uint8).ravel().tolist())
    im.save(path)


def write_davis(root, videos: dict, splits: dict[str, list[str]] | None = None,
                quality: int = 95) -> Path:
    """`root/JPEGImages/NAME/00000.jpg`, `root/Annotations/NAME/00000.png` and
    `root/ImageSets/2017/SPLIT.txt`; `videos` maps a name to (frames, labels)."""
    from PIL import Image

    root = Path(root)
    for name, (frames, labels) in videos.items():
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / name).mkdir(parents=True, exist_ok=True)
        for t in range(len(frames)):
            Image.fromarray(frames[t]).save(root / "JPEGImages" / name / f"{t:05d}.jpg",
                                            quality=quality)
            write_label_png(root / "Annotations" / name / f"{t:05d}.png", labels[t])
    for split, names in (splits or {}).items():
        (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "2017" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    return root


def make_davis_like(root, num_videos: int = 4, num_frames: int = 10, height: int = 96,
                    width: int = 128, num_objects: int = 2, seed: int = 0,
                    val_videos: int = 0, backgrounds=None) -> Path:
    """A DAVIS-style folder of synthetic videos; the last `val_videos` form the `val` split."""
    rng = np.random.default_rng(seed)
    backgrounds = backgrounds or default_backgrounds()
    videos = {f"video{i:03d}": moving_objects_video(rng, num_frames, height, width, num_objects,
                                                    backgrounds) for i in range(num_videos)}
    names = sorted(videos)
    cut = len(names) - val_videos
    return write_davis(root, videos, {"train": names[:cut], "val": names[cut:]})


def write_sav(root, videos: dict, ann_every: int = 4, as_mp4: bool = True, fps: int = 24) -> Path:
    """SA-V layout: `NAME.mp4` (or `NAME/00000.jpg ...`) and `NAME_manual.json` whose
    `masklet` has one COCO RLE per object every `ann_every` frames."""
    from PIL import Image

    from samv2_jax.io.outputs import rle_encode

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, (frames, labels) in videos.items():
        if as_mp4:
            _write_mp4(root / f"{name}.mp4", frames, fps)
        else:
            (root / name).mkdir(exist_ok=True)
            for t in range(len(frames)):
                Image.fromarray(frames[t]).save(root / name / f"{t:05d}.jpg", quality=95)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        masklet = [[rle_encode(labels[t] == i) for i in ids]
                   for t in range(0, len(frames), ann_every)]
        doc = {"video_id": name, "video_frame_count": len(frames),
               "video_height": int(frames.shape[1]), "video_width": int(frames.shape[2]),
               "masklet": masklet, "masklet_id": list(range(len(ids))),
               "masklet_num": len(ids)}
        (root / f"{name}_manual.json").write_text(json.dumps(doc))
    return root


def _write_mp4(path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2", "g": "6"}  # a key frame every 6 frames
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_sa1b(root, images: dict) -> Path:
    """SA-1B layout: `sa_N.jpg` + `sa_N.json` with an `annotations` list of RLE masks;
    `images` maps N to (image [H, W, 3], labels [H, W])."""
    from PIL import Image

    from samv2_jax.io.outputs import rle_encode

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n, (image, labels) in images.items():
        Image.fromarray(image).save(root / f"sa_{n}.jpg", quality=95)
        anns = []
        for i in sorted(int(v) for v in np.unique(labels) if v):
            m = labels == i
            ys, xs = np.nonzero(m)
            anns.append({"id": i, "segmentation": rle_encode(m), "area": int(m.sum()),
                         "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1),
                                  int(np.ptp(ys) + 1)],
                         "predicted_iou": 0.9, "stability_score": 0.95})
        doc = {"image": {"image_id": int(n), "width": int(image.shape[1]),
                         "height": int(image.shape[0]), "file_name": f"sa_{n}.jpg"},
               "annotations": anns}
        (root / f"sa_{n}.json").write_text(json.dumps(doc))
    return root


def videos(num: int, num_frames: int, height: int, width: int, num_objects: int, seed: int = 0,
           prefix: str = "video", backgrounds=None) -> dict:
    rng = np.random.default_rng(seed)
    backgrounds = backgrounds or default_backgrounds()
    return {f"{prefix}{i:03d}": moving_objects_video(rng, num_frames, height, width,
                                                     num_objects, backgrounds)
            for i in range(num)}


__all__ = ["default_backgrounds", "moving_objects_video", "write_davis", "make_davis_like",
           "write_sav", "write_sa1b", "videos", "write_label_png"]
