"""Compiled programs kept on disk between processes, so a warm start skips tracing too.

JAX's persistent compilation cache saves the XLA compile, but its key is computed from the
lowered program, so every process still traces and lowers each function first: seconds for
the image encoder and the tracking step. A `Program` here keys the compiled executable by
what determines it (the function, its static arguments, the shapes and dtypes of the rest,
this package's source, the JAX version, the backend and the CPU) and, once enabled, loads it
from disk with `jax.experimental.serialize_executable` without tracing at all.

Off by default: the library leaves global state and the disk alone. `enable(directory)` turns
it on (the `samv2` command does, beside JAX's cache). Static arguments of types this package
does not own (a user's own policy class, say) bypass the disk: their code could change
between runs under the same repr, and a stale executable would be a silently wrong result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import pickle
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import numpy as np

_STATE = {"dir": None}


def enable(directory: str | os.PathLike) -> Path | None:
    """Keep compiled programs in `directory` (created if needed); None if it cannot be."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    _STATE["dir"] = path
    return path


def disable() -> None:
    _STATE["dir"] = None


def enabled_dir() -> Path | None:
    return _STATE["dir"]


@functools.cache
def _environment() -> str:
    """Everything outside the call that changes the executable: our source, JAX, the device,
    the CPU's instruction set, XLA flags."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    import jaxlib

    dev = jax.devices()[0]
    h.update(f"{jax.__version__} {jaxlib.__version__} {dev.platform} {dev.device_kind}".encode())
    h.update(os.environ.get("XLA_FLAGS", "").encode())
    try:
        with open("/proc/cpuinfo") as f:
            h.update(next((line for line in f if line.startswith("flags")), "").encode())
    except OSError:
        pass
    return h.hexdigest()


_BUILTIN = (bool, int, float, str, bytes, type(None))


def _stable_repr(value) -> str | None:
    """A repr that names the value across processes, or None when there is none we trust."""
    if isinstance(value, _BUILTIN):
        return repr(value)
    if isinstance(value, (tuple, list)):
        parts = [_stable_repr(v) for v in value]
        return None if None in parts else f"{type(value).__name__}({','.join(parts)})"
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return f"dtype({np.dtype(value).name})"
    if dataclasses.is_dataclass(value) and type(value).__module__.startswith("samv2_jax."):
        fields = [_stable_repr(getattr(value, f.name)) for f in dataclasses.fields(value)]
        if None in fields:
            return None
        return f"{type(value).__module__}.{type(value).__qualname__}({','.join(fields)})"
    return None


def _leaf_key(x) -> str:
    if isinstance(x, jax.core.Tracer):
        raise _Traced
    if isinstance(x, jax.Array):
        return f"{x.dtype}{x.shape}{'w' if x.weak_type else ''}@{x.sharding}"
    if isinstance(x, np.ndarray | np.generic):
        return f"np{x.dtype}{x.shape}"
    if isinstance(x, bool | int | float | complex):
        return type(x).__name__  # a weakly typed scalar
    raise _Unkeyable


class _Traced(Exception):
    pass


class _Unkeyable(Exception):
    pass


class Program:
    """A jitted function (`jax.jit(...)` with its static and donated arguments) whose
    executables can come from disk. Called inside another trace, while disabled, or with a
    static argument of a foreign type, it is exactly the jitted function."""

    def __init__(self, jitted):
        self.jitted = jitted
        self.__wrapped__ = getattr(jitted, "__wrapped__", jitted)
        self.__doc__ = getattr(self.__wrapped__, "__doc__", None)
        self.__name__ = getattr(self.__wrapped__, "__name__", "program")
        info = getattr(jitted, "_jit_info", None)  # JAX's record of how it was jitted
        sig = getattr(info, "fun_signature", None)
        self._usable = info is not None and sig is not None
        self._positional = [] if sig is None else [
            q.name for q in sig.parameters.values()
            if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
        static = set(getattr(info, "static_argnames", ()) or ())
        static |= {self._positional[i] for i in (getattr(info, "static_argnums", ()) or ())
                   if i < len(self._positional)}
        self._static = frozenset(static)
        self._memo: dict[str, object] = {}
        self._name = f"{self.__wrapped__.__module__}.{self.__wrapped__.__qualname__}"

    def lower(self, *args, **kwargs):
        return self.jitted.lower(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        compiled, dyn_args, dyn_kwargs = self._executable(args, kwargs)
        return compiled(*dyn_args, **dyn_kwargs)

    def prepare(self, *args, **kwargs) -> None:
        """Load or compile the executable a call with arguments of these shapes, dtypes and
        static values will run, without running it (on a second thread, say, while the
        inputs are being read: XLA compiles without holding the GIL)."""
        compiled, _, _ = self._executable(args, kwargs)
        if compiled is self.jitted:  # not kept by this cache: JAX's own in-memory cache
            self.jitted.lower(*args, **kwargs).compile()

    def _executable(self, args, kwargs):
        """(what to call, its arguments): a kept executable with the dynamic arguments only,
        or the jitted function with all of them."""
        plain = self.jitted, args, kwargs
        if _STATE["dir"] is None or not self._usable:
            return plain
        dyn_args, dyn_kwargs, static = [], {}, []
        for i, a in enumerate(args):
            name = self._positional[i] if i < len(self._positional) else None
            (static.append((name, a)) if name in self._static else dyn_args.append(a))
        for k, v in kwargs.items():
            (static.append((k, v)) if k in self._static else dyn_kwargs.__setitem__(k, v))
        statics = [(k, _stable_repr(v)) for k, v in sorted(static, key=lambda kv: kv[0])]
        if any(r is None for _, r in statics):
            return plain
        dyn = (tuple(dyn_args), dyn_kwargs)
        leaves, tree = jax.tree_util.tree_flatten(dyn)
        try:
            leaf_keys = ";".join(_leaf_key(x) for x in leaves)
        except (_Traced, _Unkeyable):
            return plain
        key = f"{self._name}|{statics}|{tree}|{leaf_keys}"
        compiled = self._memo.get(key)
        if compiled is None:
            compiled = self._load_or_compile(key, args, kwargs)
            self._memo[key] = compiled
        return compiled, dyn_args, dyn_kwargs

    def _load_or_compile(self, key: str, args, kwargs):
        from jax.experimental import serialize_executable as se

        digest = hashlib.sha256(f"{_environment()}|{key}".encode()).hexdigest()[:40]
        path = _STATE["dir"] / f"{self.__name__}-{digest}.xla"
        if path.is_file():
            try:
                payload, in_tree, out_tree = _TreeUnpickler(io.BytesIO(path.read_bytes())).load()
                return se.deserialize_and_load(payload, in_tree, out_tree)
            except Exception as e:  # damaged or from an incompatible build: compile afresh
                path.unlink(missing_ok=True)
                # Said aloud: a loader that always fails would otherwise cost every start
                # its whole trace and compile without a sign (jax 0.10 once did that here).
                warnings.warn(f"compiled program {path.name} could not be loaded ({e}); "
                              "compiling it again", RuntimeWarning, stacklevel=3)
        lowered = self.jitted.lower(*args, **kwargs)
        with _watch_jax_cache() as hit:
            compiled = lowered.compile()
        if hit():
            # An executable JAX read back from its own persistent cache serialises without
            # its machine code on jax 0.10's CPU backend (the file loads, then a call fails
            # with "Function ... not found"). Compile once more under a key JAX's cache has
            # never seen: the option disables an HLO pass of a name no pass has.
            compiled = lowered.compile(
                {"xla_disable_hlo_passes": f"samv2-jax-{os.urandom(8).hex()}"})
        tmp = None
        try:
            data = pickle.dumps(se.serialize(compiled))
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # appears complete or not at all
        except Exception:  # a backend that cannot serialise, a full disk: run uncached
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return compiled


_COMPILING = threading.local()  # .hits: persistent-cache hits seen while this thread compiles


def _on_jax_event(event: str, **_) -> None:
    # JAX reports events on the thread that compiles; only a watched thread has a counter.
    if event == "/jax/compilation_cache/cache_hits" and hasattr(_COMPILING, "hits"):
        _COMPILING.hits += 1


@functools.cache
def _listen_to_jax_cache() -> None:
    jax.monitoring.register_event_listener(_on_jax_event)


@contextlib.contextmanager
def _watch_jax_cache():
    """Yields `hit()`: whether a compile on this thread inside the block was served by JAX's
    persistent cache."""
    _listen_to_jax_cache()
    _COMPILING.hits = 0
    seen = [0]
    try:
        yield lambda: seen[0] > 0
    finally:
        seen[0] = _COMPILING.hits
        del _COMPILING.hits


class _TreeUnpickler(pickle.Unpickler):
    """Reads back (executable bytes, input tree, output tree) and nothing else: the trees may
    only name JAX's tree types and this package's own pytree classes. (The executable itself
    is machine code: the cache directory is trusted as JAX's own cache is.)"""

    def find_class(self, module: str, name: str):
        allowed = ((module.startswith("jaxlib") and name == "PyTreeDef")
                   # the registry a tree was flattened with: jax 0.10 traces with
                   # `tracing_registry`, earlier versions with `default_registry`
                   or (module == "jax._src.tree_util" and name.endswith("_registry"))
                   or module.startswith("samv2_jax."))
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a program cache")
        return super().find_class(module, name)


class _Background:
    """fn(*args) on a daemon thread; `join` waits and re-raises what it raised. Not a
    ThreadPoolExecutor: its worker is not a daemon, so a Ctrl-C during start-up would wait
    for a compilation that is no longer wanted before the process could exit."""

    def __init__(self, fn, *args):
        self._error = None

        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the caller in join()
                self._error = e

        self._thread = threading.Thread(target=run, name="samv2-compile", daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def in_background(fn, *args) -> _Background:
    """Start fn(*args) (a `Program.prepare`, say) on a daemon thread; `.join()` waits for it
    and raises what it raised."""
    return _Background(fn, *args)
