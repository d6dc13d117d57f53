"""`samv2 download`: official checkpoints into the cache, converted once."""

from __future__ import annotations

import sys

from samv2_jax.app.options import one_line


def _run_download(args) -> int:
    from samv2_jax.weights.download import OFFICIAL, OfflineError, resolve_model

    names = list(OFFICIAL) if args.name == "all" else [args.name]
    failed = []
    for name in names:  # every name is tried and reported, also after a failure
        try:
            model = resolve_model(name, progress=not args.quiet)
        except OfflineError as e:
            failed.append(name)
            print(f"{name}: not downloaded: {one_line(e)} Then run `samv2 download {name}` "
                  "again to check and convert it.", file=sys.stderr)
            continue
        except ValueError as e:
            if len(names) == 1:
                raise
            failed.append(name)
            print(f"{name}: {one_line(e)}", file=sys.stderr)
            continue
        print(f"{name}: ready ({model.num_params:,} parameters)")
    if failed and len(names) > 1:
        print(f"{len(names) - len(failed)} of {len(names)} ready; failed: {', '.join(failed)}",
              file=sys.stderr)
    return 1 if failed else 0


def add_parsers(sub) -> None:
    p = sub.add_parser("download", help="download and convert an official checkpoint",
                       description="Download an official checkpoint into the cache "
                                   "(~/.cache/samv2_jax/models, or $SAMV2_JAX_HOME/models) and "
                                   "convert it once, so later runs start fast.")
    p.add_argument("name", help="official name, e.g. sam2.1_hiera_tiny, or 'all'")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)
