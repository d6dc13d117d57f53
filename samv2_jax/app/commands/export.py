"""`samv2 export`: a training output (or any model) as an official `.pt` checkpoint."""

from __future__ import annotations


def _run_export(args) -> int:
    from samv2_jax.weights.export import export_official
    from samv2_jax.weights.store import load

    model = load(args.model)
    path = export_official(model, args.out, overwrite=args.overwrite)
    print(f"exported {args.model} -> {path} ({model.config.name}, {model.num_params:,} "
          "parameters; load it with the official build_sam2(config, ckpt_path))")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="write a model as an official .pt checkpoint",
                       description="Write a training output folder (its latest checkpoint, or "
                                   "OUT/checkpoints/STEP), a converted directory or a .pt as "
                                   "an official SAM 2 checkpoint ({'model': state_dict}).")
    p.add_argument("model", help="training output folder, checkpoint folder or model")
    p.add_argument("out", help="the .pt file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=_run_export)
