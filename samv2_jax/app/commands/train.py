"""`samv2 train`: fine-tune a model on DAVIS / YouTube-VOS / MOSE / SA-V / SA-1B / COCO data."""

from __future__ import annotations

import sys

from samv2_jax.app.options import PROG, one_line, positive_int

# flag -> config key; the flags are shorthands for the keys a config file sets.
_FLAGS = {"model": "model", "image_size": "image_size", "init": "init", "recipe": "recipe",
          "steps": "steps", "batch_size": "batch_size", "num_frames": "num_frames",
          "max_num_objects": "max_num_objects", "save_every": "save_every", "keep": "keep",
          "val_every": "val_every", "val_videos": "val_videos", "seed": "seed", "out": "out",
          "precision": "precision", "num_workers": "num_workers",
          "max_nonfinite_steps": "max_nonfinite_steps"}


def build_config(args):
    from samv2_jax.train.loop import apply_overrides, config_from_dict, load_config_file

    d = load_config_file(args.config) if args.config else {}
    for flag, key in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            d[key] = value
    if args.data:
        d["data"] = list(args.data)
    if args.val:
        d["val"] = list(args.val)
    if args.remat is not None:
        d["remat"] = [r for r in args.remat.split(",") if r]
    if args.skip_bad_data:
        d["skip_bad_data"] = True
    if args.no_augment:
        d["augment"] = None
    if args.quiet:
        d["progress"] = False
    return config_from_dict(apply_overrides(d, args.set or ()))


def _run_train(args) -> int:
    from pathlib import Path

    from samv2_jax.train.loop import TrainingStopped, run
    from samv2_jax.train.state import Checkpoints

    config = build_config(args)
    if args.resume:
        ckpt = Checkpoints(Path(config.out).expanduser())
        try:
            if ckpt.latest_step() is None:
                raise ValueError(f"--resume: {config.out!r} holds no checkpoint to resume from")
        finally:
            ckpt.close()
    if not args.no_compile_cache:
        from samv2_jax.app.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
    try:
        result = run(config)
    except TrainingStopped as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    m = result["metrics"]
    print(f"trained to step {result['step']}: loss {m.get('loss', float('nan')):.4g}; "
          f"checkpoints {result['checkpoints']} in {result['out']} "
          f"(use it as a model: --model {result['out']})")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a model on video or image datasets",
        description="Fine-tune SAM 2 with the official objective and recipe. A run writes "
                    "checkpoints, metrics.jsonl and TensorBoard logs to --out and resumes from "
                    "its latest checkpoint when run again; --out is then itself a model for "
                    "track, segment and export.",
        epilog="example:\n  samv2 train --data davis:DAVIS,split=train --model sam2.1_hiera_tiny "
               "--image-size 512 --steps 1000 --save-every 100 --out runs/davis\n"
               "dataset kinds: davis, ytvos, mose, vos (JPEGImages/ + Annotations/), sav "
               "(mp4 or frames + *_manual.json), sa1b, coco (annotations=FILE)",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="a YAML, JSON or Python config file (optional)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any config key, dotted for nested ones "
                        "(train.freeze_image_encoder=true, augment.hflip_prob=0); repeatable")
    p.add_argument("--data", action="append", metavar="KIND:PATH[,key=value]",
                   help="a training dataset (repeat for a weighted mix: ,weight=W)")
    p.add_argument("--val", action="append", metavar="KIND:PATH[,key=value]",
                   help="a held-out dataset scored with J&F every --val-every steps")
    p.add_argument("--model", default=None, help="official name, .pt or converted directory "
                   "to start from (default sam2.1_hiera_tiny)")
    p.add_argument("--init", choices=("pretrained", "random"), default=None,
                   help="start from the model's weights (default) or from random ones")
    p.add_argument("--image-size", type=positive_int, default=None)
    p.add_argument("--recipe", default=None,
                   help="official (the MOSE fine-tuning recipe, default), frozen_image_encoder, "
                        "decoder_only")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="global batch: clips per step over all devices and hosts")
    p.add_argument("--num-frames", type=positive_int, default=None)
    p.add_argument("--max-num-objects", type=positive_int, default=None)
    p.add_argument("--save-every", type=positive_int, default=None)
    p.add_argument("--keep", type=positive_int, default=None, help="checkpoints kept")
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--val-videos", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default samv2_train)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--remat", default=None, metavar="PARTS",
                   help="comma-separated: hiera_blocks, memory_attention_layers, frame_step")
    p.add_argument("--num-workers", type=int, default=None, help="data worker processes")
    p.add_argument("--max-nonfinite-steps", type=positive_int, default=None)
    p.add_argument("--skip-bad-data", action="store_true",
                   help="skip videos with broken data (counted in the log) instead of stopping")
    p.add_argument("--no-augment", action="store_true", help="only resize the clips")
    p.add_argument("--resume", action="store_true",
                   help="require a checkpoint in --out (resuming is automatic anyway)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)
