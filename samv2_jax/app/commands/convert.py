"""`samv2 convert` and `samv2 info`: official checkpoints and converted model directories."""

from __future__ import annotations

from pathlib import Path

from samv2_jax.app.options import positive_int


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
    p.add_argument("--image-size", type=positive_int, default=None,
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


def add_parsers(sub) -> None:
    _add_convert(sub)
    _add_info(sub)
