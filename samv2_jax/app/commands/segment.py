"""`samv2 segment`: one image from clicks and/or a box."""

from __future__ import annotations

import argparse
from pathlib import Path

from samv2_jax.app.everything import add_options as add_everything_options
from samv2_jax.app.options import add_model_options, load_model, prepare_out_dir, select_device


def _parse_segment_prompts(args):
    """The clicks and box of `samv2 segment`, checked as the track command checks its own."""
    from samv2_jax.app.prompt_files import PromptSet, add_image_flags

    prompts = add_image_flags(PromptSet(), args.point, args.box)
    if not len(prompts):
        raise ValueError("give at least one --point X,Y or a --box X0,Y0,X1,Y1")
    return prompts


def _run_segment(args) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from samv2_jax.io import outputs
    from samv2_jax.predictors.aot import in_background
    from samv2_jax.predictors.image import SAM2ImagePredictor

    if args.everything:  # the automatic mask generator (app/everything.py)
        from samv2_jax.app.everything import run

        return run(args)
    prompts = _parse_segment_prompts(args)
    try:
        with Image.open(args.image) as im:
            image = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {args.image!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{args.image!r} is not a readable image ({e})") from None
    prompts.check(*image.shape[:2], what="image")
    prompt = prompts.for_frame(0)[1]
    coords = prompt.points if len(prompt.points) else None
    labels = prompt.labels if len(prompt.points) else None
    box = None if prompt.box is None else np.asarray(prompt.box, np.float32)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {args.out!r}: masks are written as PNG; use a .png name")
    overlay_path = None if args.no_overlay else Path(
        args.overlay or out.with_name(out.stem + "_overlay.png"))
    created = prepare_out_dir(out.parent)
    try:
        select_device(args.device)
        model = load_model(args)
    except BaseException:
        if created and not any(out.parent.iterdir()):
            out.parent.rmdir()
        raise
    predictor = SAM2ImagePredictor(model)
    # One click is ambiguous (part, whole, ...): ask for three and keep the best, as SAM does.
    multimask = args.all or (box is None and coords is not None and len(coords) == 1)
    # The decoder compiles on a second thread while the image is encoded (a cold start
    # compiles both: 1-2 s saved on 2 cores).
    ahead = in_background(predictor.prepare_predict, image.shape[:2], coords, labels, box,
                        multimask)
    predictor.set_image(image)
    ahead.join()
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


def add_parsers(sub) -> None:
    p = sub.add_parser("segment", help="segment one image from points and/or a box",
                       description="Segment an object in one image. One click gives the best "
                                   "of three candidate masks; --all writes all three.",
                       epilog="example:\n  samv2 segment photo.jpg --point 500,375 --out mask.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="image file (JPEG, PNG, ...); with --everything also a folder")
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
    add_everything_options(p)
    add_model_options(p)
    p.set_defaults(func=_run_segment)
