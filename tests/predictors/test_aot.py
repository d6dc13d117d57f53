"""Programs kept on disk between processes: the same results as the jitted function, no trace
at all once an executable is on disk, and a fallback to plain jit wherever a stale or
unknown program could otherwise be served."""

import dataclasses
import functools

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
    assert len(list(cache.glob("*.xla"))) == 1
    traced = len(TRACES)
    again = aot.Program(_f)  # as in a new process: nothing in memory, the file on disk
    got2 = again(a, jnp.array(b), 3, extra=jnp.float32(1.0))
    assert len(TRACES) == traced  # loaded, not traced
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
    out = aot.Program(_f)(a, jnp.array(b), 2)
    np.testing.assert_allclose(out["a"], _f(a, jnp.array(b), 2)["a"], rtol=1e-6)
    assert f.read_bytes() != b"not a program"


def test_disabled_is_plain_jit(tmp_path):
    assert aot.enabled_dir() is None
    a, b = _args()
    out = aot.Program(_f)(a, b, 2)
    assert out["a"].shape == (8, 8) and not any(tmp_path.iterdir())


def test_stable_reprs():
    from samv2_jax.config import get_config
    from samv2_jax.tracking.policies import OfficialPolicy

    cfg = get_config("sam2.1_hiera_tiny")
    assert aot._stable_repr(cfg) == aot._stable_repr(get_config("sam2.1_hiera_tiny"))
    assert aot._stable_repr(cfg) != aot._stable_repr(cfg.replace(image_size=512))
    assert aot._stable_repr(OfficialPolicy()) is not None
    assert aot._stable_repr(Scale(1.0)) is None and aot._stable_repr(lambda: 0) is None
    assert aot._stable_repr((1, "a", None, jnp.dtype("bfloat16"))) is not None
