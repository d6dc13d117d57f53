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

from samv2_jax.app.options import (
    PROG,
    interrupt_exit_code,
    interrupt_reason,
    on_stop_signal,
    one_line,
)

# In the order `samv2 --help` lists them.
COMMANDS = ("track", "segment", "download", "convert", "sample", "train", "export", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SAM 2 / SAM 2.1 in JAX")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"samv2_jax.app.commands.{name}").add_parsers(sub)
    return parser


def _version() -> str:
    # The installed distribution's metadata: no need to import the library (and JAX).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("samv2-jax")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    # SIGTERM (a plain `kill`) stops as cleanly as Ctrl-C: finished frames stay written;
    # the exit status says which it was (143 or 130).
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # started with it ignored (nohup, a background job): keep it so
            previous[sig] = signal.signal(sig, on_stop_signal)
    try:
        code = args.func(args)
    except (ValueError, OSError, ImportError, KeyError) as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"{PROG}: {interrupt_reason(e)}", file=sys.stderr)
        return interrupt_exit_code(e)
    except Exception as e:  # a bug: one line by default, the traceback on request
        if os.environ.get("SAMV2_DEBUG") == "1":
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {one_line(e)} "
              "(set SAMV2_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if code is None else int(code)


# Commands that run one compiled program over many frames or steps: there the allocator
# keeping freed memory saves page faults on every call. Not `segment`: one call, and its
# compile (many threads allocating) is slower with one shared heap (cold: 8.8 -> 10.0 s).
_MANY_CALLS = ("track", "train", "eval")


def entry() -> int:
    """The `samv2` executable: `main` in a process of its own. For the commands that call a
    program on frame after frame, the allocator first keeps freed memory for reuse
    (`host_memory`: XLA's per-call scratch space is not page-faulted in again on every
    frame). `main` alone, as tests and other programs call it, leaves the host process's
    allocator as it is."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command in _MANY_CALLS:
        from samv2_jax.app.host_memory import keep_freed_memory

        keep_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
