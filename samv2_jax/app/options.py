"""What the subcommands share: argument types, the model options, device selection, model
loading (only here are global settings changed) and output folders."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

PROG = "samv2"


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM (a plain `kill`): stops a run as cleanly as Ctrl-C, with its own exit code."""


_PENDING: list[int] = []  # signals received during this run, for raise_pending


def on_stop_signal(signum, frame):
    """The handler of SIGINT and SIGTERM. Python raises a handler's exception wherever the
    interpreter happens to be, and where that is a garbage-collection callback (JAX has
    one), the exception is printed and dropped: the signal is also recorded, so that
    `raise_pending` raises it at the next safe point."""
    _PENDING.append(signum)
    if _in_gc_callback(frame):
        return  # raised there it would only be printed ("Exception ignored in ..."), then lost
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _in_gc_callback(frame) -> bool:
    """Whether `frame` runs inside one of the garbage collector's callbacks."""
    import gc

    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    codes.discard(None)
    while frame is not None and codes:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def raise_pending() -> None:
    """Raise the stop signal received so far, if its first exception was swallowed."""
    if _PENDING:
        raise Terminated if _PENDING[-1] == signal.SIGTERM else KeyboardInterrupt


def interrupt_exit_code(err: KeyboardInterrupt) -> int:
    """128 + the signal number, as shells report it: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(err, Terminated) else 130


def interrupt_reason(err: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(err, Terminated) else "interrupted"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


DEFAULT_MODEL = "sam2.1_hiera_tiny"


def add_model_options(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="official name (downloaded once into the cache, e.g. sam2.1_hiera_tiny, "
                        "sam2.1_hiera_large), an official .pt file, or a converted directory "
                        f"(default {DEFAULT_MODEL})")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="model input resolution, a multiple of 32 (default: the model's, 1024)")
    g.add_argument("--device", default=None,
                   help="cpu, gpu (or cuda), tpu, optionally with an index: gpu:1 "
                        "(default: JAX's default device)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype; bfloat16 halves memory and is faster on GPU/TPU, "
                        "float32 gives the official numbers (default float32)")
    g.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache "
                        "(~/.cache/samv2_jax/xla), which makes a second run start fast")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def select_device(spec: str | None) -> None:
    if spec is None:
        return
    import jax

    name, _, index = spec.strip().lower().partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(name, name)
    if platform not in ("cpu", "gpu", "tpu"):
        raise ValueError(f"--device {spec!r}: expected cpu, gpu, cuda or tpu, optionally "
                         "with an index such as gpu:1")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise ValueError(f"--device {spec}: JAX has no {platform} device here (it has: "
                         f"{', '.join(have)}); install the matching jax build (e.g. "
                         "pip install 'jax[cuda12]') or use --device cpu") from None
    try:
        i = int(index or 0)
        device = devices[i]
    except (ValueError, IndexError):
        raise ValueError(f"--device {spec}: there are {len(devices)} {platform} device(s), "
                         f"numbered 0..{len(devices) - 1}") from None
    jax.config.update("jax_default_device", device)


def load_model(args):
    import jax
    import jax.numpy as jnp

    from samv2_jax.app.compilation_cache import enable_compilation_cache
    from samv2_jax.weights.download import resolve_model

    if not args.no_compile_cache:
        enable_compilation_cache()
    from samv2_jax.weights.download import OfflineError

    try:
        model = resolve_model(args.model, image_size=args.image_size, progress=not args.quiet)
    except OfflineError as e:
        raise OfflineError(f"{e} Or pass a checkpoint you already have with --model "
                           "PATH.pt.") from None
    if args.dtype == "bfloat16":
        cast = lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x
        model = model.__class__(config=model.config, params=jax.tree.map(cast, model.params))
    return model


def prepare_out_dir(path: Path) -> bool:
    """Create `path` if needed and check that files can be written there.

    Returns whether it was created (so a run that fails before writing can remove it).
    """
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {str(path)!r} exists and is not a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".samv2-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write to the output folder {str(path)!r}: "
                      f"{e.strerror or e}") from None
    return created
