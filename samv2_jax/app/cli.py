"""The `samv2` command line.

Each subcommand is one `_add_<name>(subparsers)` function that builds its parser and sets
`func`, listed in `SUBCOMMANDS`; `func(args)` returns an exit code (None means 0). Errors a
user can cause (ValueError, OSError, ImportError) become one `samv2: error: ...` line.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

PROG = "samv2"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- convert -----------------------------------------------------------------------------------


def _run_convert(args) -> int:
    from samv2_jax.weights.official import convert_state_dict, read_state_dict
    from samv2_jax.weights.store import Model, save_model

    config, params = convert_state_dict(read_state_dict(args.checkpoint),
                                        image_size=args.image_size)
    model = Model(config=config, params=params)
    out = save_model(model, args.out_dir, overwrite=args.overwrite)
    print(f"converted {args.checkpoint} -> {out} ({config.name}, image size {config.image_size}, "
          f"{model.num_params:,} parameters)")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert",
                       help="convert an official .pt checkpoint to a samv2-jax directory",
                       description="Convert an official SAM 2 / SAM 2.1 checkpoint (.pt) into a "
                                   "directory that samv2_jax.load reads without torch.")
    p.add_argument("checkpoint", help="official checkpoint, e.g. sam2.1_hiera_tiny.pt")
    p.add_argument("out_dir", help="directory to write (config.json + params/)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="input resolution to store in the config (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    p.set_defaults(func=_run_convert)


# --- info --------------------------------------------------------------------------------------


def _run_info(args) -> int:
    from samv2_jax.weights.download import resolve_model

    path = Path(args.path)
    model = resolve_model(args.path, progress=False)
    cfg = model.config
    kind = "converted directory" if path.is_dir() else "official PyTorch checkpoint"
    rows = [
        ("model", cfg.name),
        ("version", cfg.version),
        ("image size", str(cfg.image_size)),
        ("parameters", f"{model.num_params:,}"),
        ("read from", f"{path.resolve()} ({kind})" if path.exists() else
         f"{args.path} (official name, from the cache)"),
    ]
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a converted model or an official checkpoint")
    p.add_argument("path", help="converted model directory, official .pt checkpoint or an "
                                "official name such as sam2.1_hiera_tiny")
    p.set_defaults(func=_run_info)


# --- shared by track and segment ------------------------------------------------------------

DEFAULT_MODEL = "sam2.1_hiera_tiny"


def _add_model_options(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="official name (downloaded once into the cache, e.g. sam2.1_hiera_tiny, "
                        "sam2.1_hiera_large), an official .pt file, or a converted directory "
                        f"(default {DEFAULT_MODEL})")
    g.add_argument("--image-size", type=_positive_int, default=None,
                   help="model input resolution, a multiple of 32 (default: the model's, 1024)")
    g.add_argument("--device", default=None,
                   help="cpu, gpu (or cuda), tpu, optionally with an index: gpu:1 "
                        "(default: JAX's default device)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype; bfloat16 halves memory and is faster on GPU/TPU, "
                        "float32 gives the official numbers (default float32)")
    g.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache "
                        "(~/.cache/samv2_jax/xla), which makes a second run start fast")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _select_device(spec: str | None) -> None:
    if spec is None:
        return
    import jax

    name, _, index = spec.strip().lower().partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(name, name)
    if platform not in ("cpu", "gpu", "tpu"):
        raise ValueError(f"--device {spec!r}: expected cpu, gpu, cuda or tpu, optionally "
                         "with an index such as gpu:1")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise ValueError(f"--device {spec}: JAX has no {platform} device here (it has: "
                         f"{', '.join(have)}); install the matching jax build (e.g. "
                         "pip install 'jax[cuda12]') or use --device cpu") from None
    try:
        i = int(index or 0)
        device = devices[i]
    except (ValueError, IndexError):
        raise ValueError(f"--device {spec}: there are {len(devices)} {platform} device(s), "
                         f"numbered 0..{len(devices) - 1}") from None
    jax.config.update("jax_default_device", device)


def _load_model(args):
    import jax
    import jax.numpy as jnp

    from samv2_jax.app.compilation_cache import enable_compilation_cache
    from samv2_jax.weights.download import resolve_model

    if not args.no_compile_cache:
        enable_compilation_cache()
    model = resolve_model(args.model, image_size=args.image_size, progress=not args.quiet)
    if args.dtype == "bfloat16":
        cast = lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x
        model = model.__class__(config=model.config, params=jax.tree.map(cast, model.params))
    return model


def _prepare_out_dir(path: Path) -> bool:
    """Create `path` if needed and check that files can be written there.

    Returns whether it was created (so a run that fails before writing can remove it).
    """
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {str(path)!r} exists and is not a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".samv2-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write to the output folder {str(path)!r}: "
                      f"{e.strerror or e}") from None
    return created


# --- track -------------------------------------------------------------------------------------


def _video_source(text: str):
    # a bare integer is a camera index, as in OpenCV and ffmpeg
    return int(text) if text.isdigit() and not Path(text).exists() else text


def _run_track(args) -> int:
    from samv2_jax.app.prompt_files import PromptSet, add_file, add_flags
    from samv2_jax.app.track_job import OutputPaths, track_video
    from samv2_jax.io.frames import open_video
    from samv2_jax.predictors.streaming import StreamingTracker

    prompts = add_flags(PromptSet(), args.point, args.box, args.mask)
    if args.prompts:
        add_file(prompts, args.prompts)
    if not len(prompts):
        raise ValueError("nothing to track: give at least one prompt, e.g. --point 0:320,240 "
                         "(frame 0, x=320, y=240), --box 0:X0,Y0,X1,Y1, --mask 0:mask.png or "
                         "--prompts prompts.json")
    out = Path(args.out)
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

    reader = open_video(_video_source(args.video))
    created = False
    try:
        info = reader.info
        prompts.check(info.height, info.width, info.num_frames)
        beyond = [f for f in prompts.frames if args.max_frames and f >= args.max_frames]
        if beyond:
            raise ValueError(f"prompts for frame(s) {beyond} lie beyond --max-frames "
                             f"{args.max_frames}; raise it or drop those prompts")
        created = _prepare_out_dir(out)
        _select_device(args.device)
        model = _load_model(args)
        if args.overwrite and paths.masks_dir is not None and paths.masks_dir.is_dir():
            for old in paths.masks_dir.glob("*.png"):
                old.unlink()
        tracker = StreamingTracker(model, num_frames=info.num_frames)
    except BaseException:
        reader.close()
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    header = {"video": str(args.video), "model": model.config.name,
              "image_size": model.config.image_size, "objects": prompts.obj_ids}
    if not args.quiet:
        length = f"{info.num_frames} frames" if info.num_frames else "length unknown"
        print(f"{args.video}: {info.width}x{info.height}, {length}; model {model.config.name} "
              f"at {model.config.image_size}; objects {prompts.obj_ids}", file=sys.stderr)
    try:
        report = track_video(tracker, reader, prompts, paths, fps=args.fps, header=header,
                             progress=not args.quiet, max_frames=args.max_frames)
    except BaseException as e:
        report = getattr(e, "report", None)
        if report is not None:
            where = (f"frames 0..{report.frames - 1} are complete in {str(out)!r}"
                     if report.frames else f"no frame was finished; {str(out)!r} holds none")
            reason = "interrupted" if isinstance(e, KeyboardInterrupt) else _one_line(e)
            print(f"{PROG}: stopped after {report.frames} frames ({reason}); {where}",
                  file=sys.stderr)
            return 130 if isinstance(e, KeyboardInterrupt) else 1
        raise
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


def _add_track(sub) -> None:
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
                        '"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}, ...]}')
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
    p.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                   help="track only the first N frames")
    _add_model_options(p)
    p.set_defaults(func=_run_track)


# --- segment -----------------------------------------------------------------------------------

_XY = re.compile(r"^([-+]?\d*\.?\d+),([-+]?\d*\.?\d+)(?::(-?\d+))?$")


def _parse_segment_prompts(args):
    import numpy as np

    pts, labels = [], []
    for text in args.point:
        m = _XY.match(text.strip())
        if not m:
            raise ValueError(f"--point {text!r}: expected X,Y[:LABEL], e.g. 320,240 or 50,60:0")
        label = 1 if m.group(3) is None else int(m.group(3))
        if label not in (0, 1):
            raise ValueError(f"--point {text!r}: LABEL is 1 (on the object) or 0 (not on it)")
        pts.append([float(m.group(1)), float(m.group(2))])
        labels.append(label)
    box = None
    if args.box is not None:
        try:
            box = [float(v) for v in args.box.split(",")]
        except ValueError:
            box = []
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"--box {args.box!r}: expected X0,Y0,X1,Y1 with X1 > X0, Y1 > Y0")
    if not pts and box is None:
        raise ValueError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    return (np.asarray(pts, np.float32) if pts else None,
            np.asarray(labels, np.int32) if pts else None,
            np.asarray(box, np.float32) if box is not None else None)


def _run_segment(args) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from samv2_jax.io import outputs
    from samv2_jax.predictors.image import SAM2ImagePredictor

    coords, labels, box = _parse_segment_prompts(args)
    try:
        with Image.open(args.image) as im:
            image = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {args.image!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{args.image!r} is not a readable image ({e})") from None
    h, w = image.shape[:2]
    for x, y in (coords if coords is not None else []):
        if not (0 <= x <= w and 0 <= y <= h):
            raise ValueError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image")
    if box is not None and (box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h):
        raise ValueError(f"box {args.box} lies outside the {w}x{h} image")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out!r}: masks are written as PNG; use a .png name")
    overlay_path = None if args.no_overlay else Path(
        args.overlay or out.with_name(out.stem + "_overlay.png"))
    created = _prepare_out_dir(out.parent)
    try:
        _select_device(args.device)
        model = _load_model(args)
    except BaseException:
        if created and not any(out.parent.iterdir()):
            out.parent.rmdir()
        raise
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    # One click is ambiguous (part, whole, ...): ask for three and keep the best, as SAM does.
    multimask = args.all or (box is None and coords is not None and len(coords) == 1)
    masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels, box=box,
                                         multimask_output=multimask)
    order = np.argsort(-scores)
    keep = order if args.all else order[:1]
    written = []
    for rank, i in enumerate(keep):
        path = out if not args.all else out.with_name(f"{out.stem}_{rank}{out.suffix}")
        outputs.write_label_png(path, masks[i].astype(np.uint8))
        written.append(path)
        print(f"{path}: score {scores[i]:.3f}, area {int(masks[i].sum())} px"
              + (" (best)" if rank == 0 and len(keep) > 1 else ""))
    if overlay_path is not None:
        labels_map = outputs.label_map(masks[keep[:1]] > 0, [1])
        Image.fromarray(outputs.overlay(image, labels_map)).save(overlay_path)
        print(f"{overlay_path}: overlay of the best mask")
    return 0


def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment one image from points and/or a box",
                       description="Segment an object in one image. One click gives the best "
                                   "of three candidate masks; --all writes all three.",
                       epilog="example:\n  samv2 segment photo.jpg --point 500,375 --out mask.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="image file (JPEG, PNG, ...)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[:LABEL]",
                   help="a click in image pixels; LABEL 1 = on the object (default), 0 = not; "
                        "repeatable")
    p.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1", help="a box around the object")
    p.add_argument("--out", required=True, help="mask PNG to write (0 = background, 1 = object)")
    p.add_argument("--all", action="store_true",
                   help="write all three candidates as OUT_0.png (best) .. OUT_2.png")
    p.add_argument("--overlay", default=None,
                   help="overlay picture to write (default: OUT_overlay.png)")
    p.add_argument("--no-overlay", action="store_true", help="do not write the overlay picture")
    _add_model_options(p)
    p.set_defaults(func=_run_segment)


# --- download ----------------------------------------------------------------------------------


def _run_download(args) -> int:
    from samv2_jax.weights.download import OFFICIAL, resolve_model

    names = list(OFFICIAL) if args.name == "all" else [args.name]
    for name in names:
        model = resolve_model(name, progress=not args.quiet)
        print(f"{name}: ready ({model.num_params:,} parameters)")
    return 0


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="download and convert an official checkpoint",
                       description="Download an official checkpoint into the cache "
                                   "(~/.cache/samv2_jax/models, or $SAMV2_JAX_HOME/models) and "
                                   "convert it once, so later runs start fast.")
    p.add_argument("name", help="official name, e.g. sam2.1_hiera_tiny, or 'all'")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)


# --- entry point -------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable] = [_add_track, _add_segment, _add_download, _add_convert,
                               _add_info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SAM 2 / SAM 2.1 in JAX")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    # SIGTERM (a plain `kill`) stops as cleanly as Ctrl-C: finished frames stay written.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = args.func(args)
    except (ValueError, OSError, ImportError, KeyError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line by default, the traceback on request
        if os.environ.get("SAMV2_DEBUG") == "1":
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)} "
              "(set SAMV2_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0 if code is None else int(code)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
