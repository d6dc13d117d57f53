"""The `samv2` command line: its entry point, the list of subcommands and how errors and
signals end a run.

Each subcommand lives in `samv2_jax.app.commands.<name>` and adds its parser(s) with
`add_parsers(subparsers)`; a parser's `func(args)` returns an exit code (None means 0). Errors a
user can cause (ValueError, OSError, ImportError, KeyError) become one `samv2: error: ...`
line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from samv2_jax.app.options import PROG, one_line

# In the order `samv2 --help` lists them.
COMMANDS = ("track", "segment", "download", "convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SAM 2 / SAM 2.1 in JAX")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"samv2_jax.app.commands.{name}").add_parsers(sub)
    return parser


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
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line by default, the traceback on request
        if os.environ.get("SAMV2_DEBUG") == "1":
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {one_line(e)} "
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
