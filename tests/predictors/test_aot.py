"""Programs kept on disk between processes: the same results as the jitted function, no trace
at all once an executable is on disk, and a fallback to plain jit wherever a stale or
unknown program could otherwise be served."""

import dataclasses
import functools
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samv2_jax.predictors import aot

TRACES = []


@dataclasses.dataclass(frozen=True)
class Scale:  # a static argument of a type this package does not own
    k: float


@functools.partial(jax.jit, static_argnames=("n", "scale"), donate_argnames=("b",))
def _f(a, b, n: int = 2, *, scale=None, extra=None):
    TRACES.append(n)
    k = 1.0 if scale is None else scale.k
    for _ in range(n):
        a = jnp.tanh(a @ a.T) * k + b
    out = {"a": a, "b": b * 2}
    if extra is not None:
        out["extra"] = extra + 1
    return out


def _fresh_f():
    """`_f` as a new function object with the same name (what a new process would have)."""
    fn = types.FunctionType(_f.__wrapped__.__code__, _f.__wrapped__.__globals__, "_f",
                            _f.__wrapped__.__defaults__, _f.__wrapped__.__closure__)
    fn.__kwdefaults__ = _f.__wrapped__.__kwdefaults__
    fn.__qualname__ = _f.__wrapped__.__qualname__
    return jax.jit(fn, static_argnames=("n", "scale"), donate_argnames=("b",))


@pytest.fixture
def cache(tmp_path):
    aot.enable(tmp_path / "programs")
    yield tmp_path / "programs"
    aot.disable()


def _args(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, n)), jnp.float32), jnp.ones((n, n), jnp.float32)


def test_same_results_and_no_trace_from_disk(cache):
    TRACES.clear()
    a, b = _args()
    want = _f(a, jnp.array(b), 3)  # plain jit (b is donated, so a copy)
    first = aot.Program(_f)
    got = first(a, jnp.array(b), 3, extra=jnp.float32(1.0))
    np.testing.assert_allclose(got["a"], want["a"], rtol=1e-6)
    assert float(got["extra"]) == 2.0
    [f] = cache.glob("*.xla")
    written = f.stat().st_ino
    traced = len(TRACES)
    # As in a new process: a new function object (so no trace JAX keeps in memory can
    # stand in for the file), the file on disk. A failed load would trace (and warn).
    again = aot.Program(_fresh_f())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got2 = again(a, jnp.array(b), 3, extra=jnp.float32(1.0))
    assert len(TRACES) == traced  # loaded, not traced
    assert f.stat().st_ino == written  # and not written again
    np.testing.assert_array_equal(got2["a"], got["a"])
    donated = jnp.array(b)
    again(a, donated, 3, extra=jnp.float32(1.0))
    assert donated.is_deleted()  # donation survives the round trip


def test_new_shapes_and_statics_get_their_own_programs(cache):
    p = aot.Program(_f)
    a, b = _args()
    p(a, b, 2)
    p(a, jnp.ones((8, 8)), 3)
    a16, b16 = _args(n=16)
    p(a16, b16, 2)
    assert len(list(cache.glob("*.xla"))) == 3


def test_foreign_static_types_and_traces_bypass_the_disk(cache):
    p = aot.Program(_f)
    a, b = _args()
    out = p(a, b, 2, scale=Scale(0.5))
    assert not list(cache.glob("*.xla"))  # a user's class: never served from disk
    want = _f(a, jnp.ones((8, 8)), 2, scale=Scale(0.5))
    np.testing.assert_allclose(out["a"], want["a"], rtol=1e-6)
    # Inside another trace it is the jitted function (and differentiable).
    g = jax.grad(lambda x: p(x, jnp.ones((8, 8)), 1)["a"].sum())(a)
    assert g.shape == a.shape and not list(cache.glob("*.xla"))


def test_a_damaged_file_is_compiled_again(cache):
    a, b = _args()
    aot.Program(_f)(a, jnp.array(b), 2)
    [f] = cache.glob("*.xla")
    f.write_bytes(b"not a program")
    with pytest.warns(RuntimeWarning, match="could not be loaded"):
        out = aot.Program(_f)(a, jnp.array(b), 2)
    np.testing.assert_allclose(out["a"], _f(a, jnp.array(b), 2)["a"], rtol=1e-6)
    assert f.read_bytes() != b"not a program"


def test_disabled_is_plain_jit(tmp_path):
    assert aot.enabled_dir() is None
    a, b = _args()
    out = aot.Program(_f)(a, b, 2)
    assert out["a"].shape == (8, 8) and not any(tmp_path.iterdir())


_BACKEND_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_: event.endswith("backend_compile_duration")
    and _BACKEND_COMPILES.append(event))


@pytest.mark.parametrize("kept", [True, False], ids=["program-cache", "jax-only"])
def test_prepare_compiles_what_the_call_then_runs(kept, tmp_path):
    """`prepare` (on a second thread, as `init_state` and `samv2 segment` use it) leaves
    nothing to trace or compile for the call it was given the shapes of."""
    if kept:
        aot.enable(tmp_path / "programs")
    try:
        p = aot.Program(_fresh_f())
        a, b = _args(seed=3, n=12)
        TRACES.clear()
        _BACKEND_COMPILES.clear()
        aot.in_background(p.prepare, a, jnp.zeros_like(b), 2).join()
        assert len(TRACES) == 1 and len(_BACKEND_COMPILES) >= 1
        assert len(list((tmp_path / "programs").glob("*.xla"))) == int(kept)
        b_copy = jnp.array(b)  # (the copy is a program of its own)
        _BACKEND_COMPILES.clear()
        out = p(a, b_copy, 2)
        assert len(TRACES) == 1 and not _BACKEND_COMPILES
        np.testing.assert_allclose(out["a"], _f(a, jnp.array(b), 2)["a"], rtol=1e-6)
    finally:
        aot.disable()


def test_in_background_hands_its_error_to_join():
    def fails():
        raise ValueError("no such shape")

    with pytest.raises(ValueError, match="no such shape"):
        aot.in_background(fails).join()


def test_stable_reprs():
    from samv2_jax.config import get_config
    from samv2_jax.tracking.policies import OfficialPolicy

    cfg = get_config("sam2.1_hiera_tiny")
    assert aot._stable_repr(cfg) == aot._stable_repr(get_config("sam2.1_hiera_tiny"))
    assert aot._stable_repr(cfg) != aot._stable_repr(cfg.replace(image_size=512))
    assert aot._stable_repr(OfficialPolicy()) is not None
    assert aot._stable_repr(Scale(1.0)) is None and aot._stable_repr(lambda: 0) is None
    assert aot._stable_repr((1, "a", None, jnp.dtype("bfloat16"))) is not None


_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from samv2_jax.predictors import aot
jax.config.update("jax_compilation_cache_dir", sys.argv[1] + "/xla")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
aot.enable(sys.argv[1] + "/programs")
def g(a, b):
    for _ in range(3):
        a = jnp.tanh(a @ a.T) * 0.5 + jnp.broadcast_to(b[:, None], a.shape)
    return a
x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)
print(repr(float(aot.Program(jax.jit(g))(x, x[0]).sum())))
"""


def test_a_program_compiled_from_jax_s_own_cache_still_loads(tmp_path):
    """Three processes with JAX's persistent cache on: the first compiles; the second, its
    program file gone, gets the executable from JAX's cache (which jax 0.10 serialises without
    its machine code); the third loads the second's file and must run it, same result."""
    import shutil
    import subprocess
    import sys

    script = tmp_path / "prog.py"
    script.write_text(_SCRIPT)

    def run():
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "c")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return float(done.stdout.split()[-1])

    first = run()
    shutil.rmtree(tmp_path / "c" / "programs")
    assert run() == first
    assert len(list((tmp_path / "c" / "programs").glob("*.xla"))) == 1
    assert run() == first
