"""`samv2 download`: official checkpoints into the cache, converted once."""

from __future__ import annotations


def _run_download(args) -> int:
    from samv2_jax.weights.download import OFFICIAL, resolve_model

    names = list(OFFICIAL) if args.name == "all" else [args.name]
    for name in names:
        model = resolve_model(name, progress=not args.quiet)
        print(f"{name}: ready ({model.num_params:,} parameters)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("download", help="download and convert an official checkpoint",
                       description="Download an official checkpoint into the cache "
                                   "(~/.cache/samv2_jax/models, or $SAMV2_JAX_HOME/models) and "
                                   "convert it once, so later runs start fast.")
    p.add_argument("name", help="official name, e.g. sam2.1_hiera_tiny, or 'all'")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)
