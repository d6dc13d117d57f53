"""The `samv2` command line.

Each subcommand is one `_add_<name>(subparsers)` function that builds its parser and sets
`func`, listed in `SUBCOMMANDS`; `func(args)` returns an exit code (None means 0). Errors a
user can cause (ValueError, OSError, ImportError) become one `samv2: error: ...` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

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
    from convert.checkpoint import convert_state_dict, read_state_dict
    from samv2_jax.checkpoint import Model, save_model

    config, params = convert_state_dict(read_state_dict(args.checkpoint),
                                        image_size=args.image_size)
    model = Model(config=config, params=params)
    out = save_model(model, args.out_dir, overwrite=args.overwrite)
    print(f"converted {args.checkpoint} -> {out} ({config.name}, image size {config.image_size}, "
          f"{model.num_params:,} parameters)")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert an official .pt checkpoint to a samv2-jax directory",
                       description="Convert an official SAM 2 / SAM 2.1 checkpoint (.pt) into a "
                                   "directory that samv2_jax.checkpoint.load reads without torch.")
    p.add_argument("checkpoint", help="official checkpoint, e.g. sam2.1_hiera_tiny.pt")
    p.add_argument("out_dir", help="directory to write (config.json + params/)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="input resolution to store in the config (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    p.set_defaults(func=_run_convert)


# --- info --------------------------------------------------------------------------------------


def _run_info(args) -> int:
    from samv2_jax.checkpoint import load

    path = Path(args.path)
    model = load(path)
    cfg = model.config
    kind = "converted directory" if path.is_dir() else "official PyTorch checkpoint"
    rows = [
        ("model", cfg.name),
        ("version", cfg.version),
        ("image size", str(cfg.image_size)),
        ("parameters", f"{model.num_params:,}"),
        ("read from", f"{path.resolve()} ({kind})"),
    ]
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a converted model or an official checkpoint")
    p.add_argument("path", help="converted model directory or official .pt checkpoint")
    p.set_defaults(func=_run_info)


# --- entry point -------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable] = [_add_convert, _add_info]


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
    try:
        code = args.func(args)
    except (ValueError, OSError, ImportError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
