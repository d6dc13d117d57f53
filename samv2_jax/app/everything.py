"""`samv2 segment IMAGE --everything --out DIR`: every object in an image, or in each image of
a folder, with the automatic mask generator.

For each image NAME.ext it writes into DIR:
  NAME.png          label map: pixel value k = the k-th annotation of NAME.json (0: none);
                    where masks overlap the smaller one is shown. Palettized 8-bit PNG up to
                    255 masks, 16-bit greyscale beyond.
  NAME_overlay.png  the masks tinted over the image (unless --no-overlay)
  NAME.json         SA-1B / COCO style: {"image": {...}, "annotations": [{"id", "segmentation"
                    (COCO RLE), "area", "bbox" (XYWH), "predicted_iou", "stability_score",
                    "point_coords", "crop_box"}, ...]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def add_options(p) -> None:
    """The generator's settings as flags of `samv2 segment` (used with --everything)."""
    g = p.add_argument_group("segment everything (--everything)")
    g.add_argument("--everything", action="store_true",
                   help="segment every object (the automatic mask generator); IMAGE may be a "
                        "folder of images, --out is then a folder for NAME.png (labels), "
                        "NAME_overlay.png and NAME.json (COCO RLE, boxes, scores)")
    g.add_argument("--points-per-side", type=int, default=32,
                   help="prompt grid of N x N points (default 32)")
    g.add_argument("--points-per-batch", type=int, default=64,
                   help="prompts decoded at once (default 64; more is faster on GPU)")
    g.add_argument("--pred-iou-thresh", type=float, default=0.8,
                   help="keep masks whose predicted IoU is above this (default 0.8)")
    g.add_argument("--stability-score-thresh", type=float, default=0.95,
                   help="keep masks whose stability score is at least this (default 0.95)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7,
                   help="box IoU above which the weaker of two masks is dropped (default 0.7)")
    g.add_argument("--crop-n-layers", type=int, default=0,
                   help="also segment 2x2, 4x4, ... crops, this many layers (default 0)")
    g.add_argument("--min-mask-region-area", type=int, default=0,
                   help="fill holes and drop islands up to this area, at low resolution "
                        "(default 0: off)")
    g.add_argument("--use-m2m", action="store_true",
                   help="refine every mask once with its own logits as a mask prompt")


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"folder {str(path)!r} holds no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    return [path]


def _output_stems(files: list[Path]) -> list[str]:
    """NAME for each image; when two images share a stem (a.jpg, a.png) they get a_jpg, a_png."""
    stems = [f.stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{f.stem}_{f.suffix.lstrip('.').lower()}" if f.stem in dup else f.stem
            for f in files]


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a readable image ({e})") from None


def label_image(records: list[dict], hw: tuple[int, int]) -> np.ndarray:
    """[H, W] annotation numbers (1-based record index), smaller masks painted last."""
    from samv2_jax.io import rle

    dtype = np.uint8 if len(records) <= 255 else np.uint16
    labels = np.zeros(hw, dtype)
    for i in sorted(range(len(records)), key=lambda i: -records[i]["area"]):
        seg = records[i]["segmentation"]
        mask = rle.decode(seg) if isinstance(seg, dict) else seg
        labels[mask] = i + 1
    return labels


def _write_png(path: Path, labels: np.ndarray) -> None:
    from samv2_jax.io import outputs

    if labels.dtype == np.uint8:
        outputs.write_label_png(path, labels)
        return
    from PIL import Image

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")
    os.replace(tmp, path)


def annotations_json(records: list[dict], file_name: str, hw: tuple[int, int]) -> dict:
    from samv2_jax.io import rle

    anns = []
    for i, r in enumerate(records):
        seg = r["segmentation"]
        seg = rle.compress(seg if isinstance(seg, dict) else rle.encode(seg))
        anns.append({"id": i + 1, "segmentation": seg, "area": r["area"], "bbox": r["bbox"],
                     "predicted_iou": r["predicted_iou"],
                     "stability_score": r["stability_score"],
                     "point_coords": r["point_coords"], "crop_box": r["crop_box"]})
    return {"image": {"file_name": file_name, "height": int(hw[0]), "width": int(hw[1])},
            "annotations": anns}


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, records: list[dict],
                  file_name: str, overlay: bool = True) -> list[Path]:
    """The label PNG, overlay PNG and JSON of one image's records; returns the paths."""
    from PIL import Image

    from samv2_jax.io import outputs

    hw = image.shape[:2]
    labels = label_image(records, hw)
    written = [out_dir / f"{stem}.png"]
    _write_png(written[0], labels)
    if overlay:
        # The palette has 255 colours: beyond that they repeat.
        shown = np.where(labels > 0, (labels.astype(np.int64) - 1) % 255 + 1, 0)
        path = out_dir / f"{stem}_overlay.png"
        Image.fromarray(outputs.overlay(image, shown.astype(np.uint8))).save(path)
        written.append(path)
    path = out_dir / f"{stem}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(annotations_json(records, file_name, hw)) + "\n")
    os.replace(tmp, path)
    written.append(path)
    return written


def check_args(args) -> None:
    if args.point or args.box:
        raise ValueError("--everything segments the whole image: leave out --point and --box")
    if args.all or args.overlay:
        raise ValueError("--all and --overlay are for prompted segmentation; with --everything "
                         "the overlay is written as NAME_overlay.png (or not, --no-overlay)")
    for name in ("points_per_side", "points_per_batch"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.crop_n_layers < 0 or args.min_mask_region_area < 0:
        raise ValueError("--crop-n-layers and --min-mask-region-area must be >= 0")


def run(args) -> int:
    """The --everything mode of `samv2 segment`."""
    from samv2_jax.app.options import load_model, prepare_out_dir, select_device
    from samv2_jax.automatic import SAM2AutomaticMaskGenerator

    check_args(args)
    files = _image_files(Path(args.image))
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        raise ValueError(f"--out {args.out!r}: with --everything, --out is a folder (it gets "
                         "NAME.png, NAME_overlay.png and NAME.json per image)")
    created = prepare_out_dir(out)
    try:
        select_device(args.device)
        model = load_model(args)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    gen = SAM2AutomaticMaskGenerator(
        model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh, stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area, use_m2m=args.use_m2m,
        output_mode="coco_rle")
    stems = _output_stems(files)
    bar = None
    if len(files) > 1 and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="image", desc="segment everything")
    try:
        for path, stem in zip(files, stems):
            image = _read_rgb(path)
            records = gen.generate(image)
            write_outputs(out, stem, image, records, path.name, overlay=not args.no_overlay)
            line = f"{path.name}: {len(records)} masks -> {out / stem}.png, .json"
            if bar is None:
                print(line)
            else:
                bar.update(1)
                bar.set_postfix_str(f"{path.name}: {len(records)} masks")
    finally:
        if bar is not None:
            bar.close()
    if bar is not None:
        print(f"{len(files)} images -> {out}")
    return 0
