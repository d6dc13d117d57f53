"""`samv2 track`: objects through a video, a frame folder or a camera, in flat memory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samv2_jax.app.options import (
    PROG,
    add_model_options,
    interrupt_exit_code,
    interrupt_reason,
    load_model,
    one_line,
    positive_int,
    prepare_out_dir,
    raise_pending,
    select_device,
)


def _video_source(text: str):
    # a bare integer is a camera index, as in OpenCV and ffmpeg
    return int(text) if text.isdigit() and not Path(text).exists() else text


def _run_track(args) -> int:
    from samv2_jax.io.frames import open_video

    prompts = _gather_prompts(args)
    out = Path(args.out)
    paths = _output_paths(args, out)
    reader = open_video(_video_source(args.video))
    tracker, header, created = _start(args, reader, prompts, paths, out)
    report = _run(args, tracker, reader, prompts, paths, header, out, created)
    if isinstance(report, int):  # stopped early: the exit code
        return report
    unused = [f for f in prompts.frames if f >= report.frames]
    if unused:
        raise ValueError(f"the video ended after {report.frames} frames, so the prompts for "
                         f"frame(s) {unused} were never used (outputs for frames "
                         f"0..{report.frames - 1} are complete)")
    if not args.quiet:
        speed = f", {report.steady_fps:.2f} frames/s after compiling" if report.steady_fps else ""
        written = [str(p) for p in (paths.masks_dir, paths.overlay, paths.json) if p]
        print(f"tracked {report.frames} frames in {report.seconds:.1f} s{speed}; wrote "
              + ", ".join(written), file=sys.stderr)
    return 0


def _gather_prompts(args):
    """Every --point/--box/--mask flag and the --prompts file, as one PromptSet."""
    from samv2_jax.app.prompt_files import PromptSet, add_file, add_flags

    prompts = add_flags(PromptSet(), args.point, args.box, args.mask)
    if args.prompts:
        add_file(prompts, args.prompts)
    if not len(prompts):
        raise ValueError("nothing to track: give at least one prompt, e.g. --point 0:320,240 "
                         "(frame 0, x=320, y=240), --box 0:X0,Y0,X1,Y1, --mask 0:mask.png or "
                         "--prompts prompts.json")
    return prompts


def _output_paths(args, out: Path):
    """The outputs asked for, refusing to replace earlier results without --overwrite."""
    from samv2_jax.app.track_job import OutputPaths

    paths = OutputPaths(masks_dir=out / "masks" if args.masks else None,
                        overlay=out / f"overlay.{args.overlay_format}" if args.overlay else None,
                        json=out / "results.json" if args.json else None)
    if paths == OutputPaths():
        raise ValueError("every output is turned off (--no-masks --no-overlay --no-json); "
                         "keep at least one")
    clash = paths.existing()
    if clash and not args.overwrite:
        raise FileExistsError(f"{str(out)!r} already holds results ("
                              + ", ".join(p.name for p in clash)
                              + "); pass --overwrite or choose another --out")
    return paths


def _start(args, reader, prompts, paths, out: Path):
    """Check the prompts against the video, prepare the output folder, load the model.
    Anything failing here leaves no trace: the reader is closed, a new folder removed."""
    from samv2_jax.predictors.streaming import StreamingTracker

    created = False
    try:
        info = reader.info
        prompts.check(info.height, info.width, info.num_frames)
        beyond = [f for f in prompts.frames if args.max_frames and f >= args.max_frames]
        if beyond:
            raise ValueError(f"prompts for frame(s) {beyond} lie beyond --max-frames "
                             f"{args.max_frames}; raise it or drop those prompts")
        created = prepare_out_dir(out)
        select_device(args.device)
        model = load_model(args)
        if args.overwrite and paths.masks_dir is not None and paths.masks_dir.is_dir():
            for old in paths.masks_dir.glob("*.png"):
                old.unlink()
        tracker = StreamingTracker(model, num_frames=info.num_frames, policy=args.memory)
        raise_pending()
    except BaseException:
        reader.close()
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    cfg = model.config
    header = {"video": str(args.video), "model": cfg.name, "image_size": cfg.image_size,
              "objects": prompts.obj_ids}
    if not args.quiet:
        length = f"{info.num_frames} frames" if info.num_frames else "length unknown"
        print(f"{args.video}: {info.width}x{info.height}, {length}; model {cfg.name} "
              f"at {cfg.image_size}; objects {prompts.obj_ids}", file=sys.stderr)
    return tracker, header, created


def _run(args, tracker, reader, prompts, paths, header, out: Path, created: bool):
    """The track job; a run that stops early says where and gives its exit code instead of
    a report. One stopped before its first frame leaves nothing behind."""
    from samv2_jax.app.track_job import track_video

    note = None if args.quiet else _CostNote(tracker.cfg.image_size, reader.info.num_frames,
                                             args.max_frames)
    try:
        return track_video(tracker, reader, prompts, paths, fps=args.fps, header=header,
                           progress=not args.quiet, max_frames=args.max_frames, on_frame=note)
    except BaseException as e:
        report = getattr(e, "report", None)
        if report is None or not report.frames:
            _remove_outputs(paths, out, created)
        if report is None:
            raise
        where = (f"frames 0..{report.frames - 1} are complete in {str(out)!r}"
                 if report.frames else "no frame was finished, so nothing was kept")
        interrupted = isinstance(e, KeyboardInterrupt)
        reason = interrupt_reason(e) if interrupted else one_line(e)
        print(f"{PROG}: stopped after {report.frames} frames ({reason}); {where}",
              file=sys.stderr)
        return interrupt_exit_code(e) if interrupted else 1


# Per-frame time at 1024 over that at 512 on a 2-core CPU (benchmarks/video_tracking.py,
# sam2.1 tiny: 3.51 s / 0.46 s with one object, 9.31 s / 1.17 s with four): memory attention
# is quadratic in the number of tokens, so halving the side saves more than the 4x in pixels.
_SPEEDUP_AT_512 = 7


class _CostNote:
    """Once, after the first steady frames on a CPU at 1024 or more: what a frame costs and
    what `--image-size 512` would save, so nobody waits an hour without knowing."""

    def __init__(self, image_size: int, num_frames: int | None, max_frames: int | None):
        import jax

        self.on = jax.default_backend() == "cpu" and image_size >= 1024
        self.size = image_size
        self.total = min(n for n in (num_frames, max_frames) if n) if (num_frames or max_frames) \
            else None
        self.stamps: list[float] = []

    def __call__(self, result) -> None:
        if not self.on:
            return
        import time

        self.stamps.append(time.perf_counter())
        if len(self.stamps) == 4:  # frames 0-1 include compiling; 1->3 are steady
            from tqdm import tqdm

            per = (self.stamps[3] - self.stamps[1]) / 2
            rest = f", about {per * self.total / 60:.0f} min for all {self.total} frames" \
                if self.total else ""
            tqdm.write(f"{PROG}: about {per:.1f} s per frame at {self.size} on this CPU{rest}; "
                       f"--image-size 512 is about {_SPEEDUP_AT_512}x faster", file=sys.stderr)
            self.on = False


def _remove_outputs(paths, out: Path, created: bool) -> None:
    """Undo a run that wrote no frame: its empty outputs, and the folder if it made it."""
    for f in (paths.overlay, paths.json):
        if f is not None:
            f.unlink(missing_ok=True)
    for folder in (paths.masks_dir, out if created else None):
        if folder is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "track", help="track objects through a video and write masks, an overlay and JSON",
        description="Track one or more objects through a video file (anything FFmpeg decodes), "
                    "a folder of JPEG/PNG frames or a camera, frame by frame in flat memory.",
        epilog="examples:\n"
               "  samv2 track video.mp4 --point 0:320,240 --out results/\n"
               "  samv2 track frames/ --box 0:10,20,200,180@1 --point 5:400,300@2 --out out/\n"
               "  samv2 track video.mp4 --mask 0:first_frame_labels.png --out out/\n"
               "  samv2 track 0 --point 0:320,240 --out live/        (camera 0; Ctrl-C stops)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file, folder of frames, or camera (0, /dev/video0)")
    g = p.add_argument_group("prompts (coordinates in the video's pixels; @OBJ sets the object "
                             "id, 1 by default)")
    g.add_argument("--point", action="append", default=[], metavar="FRAME:X,Y[:LABEL][@OBJ]",
                   help="a click; LABEL 1 = on the object (default), 0 = not on it; repeatable")
    g.add_argument("--box", action="append", default=[], metavar="FRAME:X0,Y0,X1,Y1[@OBJ]",
                   help="a box around the object; repeatable")
    g.add_argument("--mask", action="append", default=[], metavar="FRAME:PATH.png[@OBJ]",
                   help="a mask image (non-zero = object); a palettized DAVIS PNG without "
                        "@OBJ gives one object per pixel value; repeatable")
    g.add_argument("--prompts", metavar="FILE.json",
                   help='many objects and frames: {"prompts": [{"frame": 0, "obj_id": 1, '
                        '"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}, '
                        '{"frame": 0, "obj_id": 2, "mask": "mask.png"}, ...]} (a mask is '
                        "used alone; its path is relative to the file)")
    o = p.add_argument_group("outputs")
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument("--masks", action=argparse.BooleanOptionalAction, default=True,
                   help="masks/NNNNN.png per frame, palettized, pixel value = object id")
    o.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True,
                   help="overlay.mp4: the video with each object in its own colour")
    o.add_argument("--overlay-format", choices=("mp4", "mkv", "mov"), default="mp4",
                   help=argparse.SUPPRESS)
    o.add_argument("--json", action=argparse.BooleanOptionalAction, default=True,
                   help="results.json: per frame and object, box, area, score, COCO RLE")
    o.add_argument("--fps", type=float, default=None,
                   help="frame rate of the overlay video (default: the video's, 30 for folders)")
    o.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="track only the first N frames")
    p.add_argument("--memory", default="official", metavar="NAME",
                   choices=("official", "samurai", "dam4sam", "sam2long", "sam3"),
                   help="memory policy: official (default), samurai, dam4sam, sam2long, sam3")
    add_model_options(p)
    p.set_defaults(func=_run_track)
