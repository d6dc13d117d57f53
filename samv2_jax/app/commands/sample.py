"""`samv2 sample FILE`: a small synthetic clip (.mp4) or photo (.jpg/.png) to try the other
commands on, for a first run without data of one's own; `samv2 sample DIR/` (a name without a
media suffix): a DAVIS-style dataset for `samv2 eval` and `samv2 train`."""

from __future__ import annotations

from pathlib import Path

from samv2_jax.app.options import positive_int

_VIDEO = (".mp4", ".mkv", ".mov")
_IMAGE = (".jpg", ".jpeg", ".png")


def scene(t: int, height: int = 480, width: int = 640, seed: int = 0):
    """Frame `t` of the sample: three shapes moving over a textured background. At t = 0 a
    red disc covers the centre, so a click at (width / 2, height / 2) lands on it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack([90 + 60 * np.sin(xx / 57.0 + yy / 91.0), 110 + 40 * np.cos(yy / 43.0),
                   120 + 50 * np.sin((xx - yy) / 77.0)], -1)
    bg += rng.normal(0, 6, bg.shape).astype(np.float32)  # fixed grain: the same every frame
    img = bg
    cx, cy = width / 2 + 6 * t, height / 2 + 2 * t
    shapes = [
        ((xx - cx) ** 2 + (yy - cy) ** 2 < (0.12 * height) ** 2, (210, 40, 40)),
        ((np.abs(xx - (0.2 * width + 4 * t)) < 0.07 * width)
         & (np.abs(yy - (0.25 * height + 3 * t)) < 0.07 * width), (40, 170, 60)),
        ((yy > 0.62 * height) & (yy - 0.62 * height < 0.25 * height)
         & (np.abs(xx - (0.78 * width - 5 * t)) < (yy - 0.62 * height) * 0.6), (40, 70, 200)),
    ]
    for inside, colour in shapes:
        img = np.where(inside[..., None], np.asarray(colour, np.float32)
                       + 0.25 * (bg - bg.mean()), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def _run_sample(args) -> int:
    out = Path(args.file)
    ext = out.suffix.lower()
    if args.file.endswith(("/", "\\")) or not ext:
        return _write_dataset(out, args, frames=args.frames or 12)
    if ext not in _VIDEO + _IMAGE:
        raise ValueError(f"{args.file!r}: name a video ({', '.join(_VIDEO)}), a picture "
                         f"({', '.join(_IMAGE)}) or a folder (DIR/) for a dataset")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass --overwrite or choose another name")
    frames = args.frames or 24
    out.parent.mkdir(parents=True, exist_ok=True)
    if ext in _IMAGE:
        from PIL import Image

        Image.fromarray(scene(0)).save(out, quality=95)
        print(f"{out}: 640x480 picture; a red disc covers the centre (320, 240)")
        return 0
    import av

    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264" if ext != ".mkv" else "ffv1", rate=args.fps)
        s.width, s.height = 640, 480
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(scene(t), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    print(f"{out}: {frames} frames of 640x480 at {args.fps} fps; on frame 0 a red disc "
          "covers the centre (320, 240)")
    return 0


def _write_dataset(out: Path, args, frames: int) -> int:
    """A DAVIS-style folder: JPEGImages/, palettized Annotations/ (two objects per video,
    exact masks) and ImageSets/2017/{train,val}.txt (the last video is `val`)."""
    import shutil

    from samv2_jax.train.data.synthetic import make_davis_like

    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise FileExistsError(f"{str(out)!r} is not empty; pass --overwrite or choose "
                                  "another folder")
        shutil.rmtree(out)
    make_davis_like(out, num_videos=4, num_frames=frames, height=240, width=320,
                    num_objects=2, val_videos=1)
    print(f"{out}: a DAVIS-style dataset of 4 videos ({frames} frames of 320x240, two objects "
          "each; videos 0-2 in the train split, 3 in val)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic clip or picture to try samv2 on",
                       description="Write a synthetic clip (.mp4, .mkv, .mov) or picture (.jpg, "
                                   ".png): three shapes moving over a textured background, a red "
                                   "disc at the centre of the first frame; or, given a folder "
                                   "(DIR/), a DAVIS-style dataset for eval and train.")
    p.add_argument("file", help="what to write, e.g. sample.mp4, photo.jpg, or dataset/ (a "
                                "DAVIS-style folder)")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="length of a clip (24; 12 for each video of a dataset)")
    p.add_argument("--fps", type=positive_int, default=12, help="frame rate of a clip (12)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_run_sample)
