"""JAX's persistent compilation cache and the predictors' program cache, on for the `samv2`
command: the image encoder takes seconds to trace and compile, and a second run of the same
program should pay neither again."""

from __future__ import annotations

import os
from pathlib import Path

import jax

_DEFAULT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "samv2_jax" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent cache at `path` (default ~/.cache/samv2_jax/xla), and keep the
    predictors' compiled programs beside it (`<dir>-programs`, see `predictors.aot`), so a
    second process neither traces nor compiles them again.

    Leaves a cache directory the user configured alone; SAMV2_JAX_NO_CACHE=1 turns both off.
    Returns JAX's cache directory in use, or None when disabled.
    """
    from samv2_jax.predictors import aot

    if os.environ.get("SAMV2_JAX_NO_CACHE") == "1":
        return None
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        directory = Path(current)
    else:
        directory = Path(path) if path is not None else _DEFAULT
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None  # a read-only home must not stop segmentation
        jax.config.update("jax_compilation_cache_dir", str(directory))
        # Cache everything that takes noticeable time; the tiny programs are cheap to rebuild.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    aot.enable(Path(f"{directory}-programs"))
    return directory
