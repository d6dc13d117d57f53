"""Data parallelism: a training step of the real objective (sam2.1 tiny at 64, 4 clips of 2
frames, 2 objects with padding) on 2 and 4 CPU devices, with params replicated or split by a
rule table, and across two processes joined by `jax.distributed`, equals the one-device step
within 1e-5 relative (loss, gradient norm and every parameter's gradient, each relative to
that tensor's largest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("pipeline_step_script.py")
TOL = 1e-5


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                         env.get("PYTHONPATH", "")])
    return env


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _compare(case: dict, ref: dict, what: str) -> None:
    """Loss and gradient norm within TOL relative; each gradient tensor within TOL of its own
    largest value, or, for tensors whose gradient is below 1e-3 of the model's largest (the
    attention key biases, whose exact gradient is zero: softmax ignores a shift common to
    all keys, so only rounding noise is left), within TOL of the model's largest."""
    assert _rel(case["loss"], ref["loss"]) < TOL, what
    assert _rel(case["grad_norm"], ref["grad_norm"]) < TOL, what
    keys = [k for k in ref if k.startswith("grad/")]
    assert keys and set(keys) == {k for k in case if k.startswith("grad/")}
    largest = max(float(np.abs(ref[k]).max()) for k in keys)
    trained = 0
    for k in keys:
        top = float(np.abs(ref[k]).max())
        if top == 0:  # frozen parameters have no gradient at all
            assert np.abs(case[k]).max() == 0, (what, k)
            continue
        trained += 1
        err = float(np.abs(case[k].astype(np.float64) - ref[k]).max())
        scale = top if top >= 1e-3 * largest else largest
        assert err / scale < TOL, (what, k, err / scale)
    assert trained > 50  # the prompt encoder's and mask decoder's tensors


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    out = tmp_path_factory.mktemp("meshes") / "meshes.npz"
    res = subprocess.run([sys.executable, str(SCRIPT), "meshes", str(out)], env=_env(4),
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    d = np.load(out)
    cases: dict[str, dict] = {}
    for key in d.files:
        name, _, field = key.partition(":")
        cases.setdefault(name, {})[field] = d[key]
    return cases


@pytest.mark.parametrize("case", ["2", "4", "2x2-sharded"])
def test_step_on_several_devices_equals_one_device(meshes, case):
    _compare(meshes[case], meshes["1"], f"{case} devices")
    assert np.isfinite(meshes["1"]["loss"]) and meshes["1"]["loss"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_through_jax_distributed_equal_one_device(meshes, tmp_path):
    out = tmp_path / "process0.npz"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "process", str(out), str(i), "2",
                               str(port)], env=_env(1), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        results = [p.communicate(timeout=1800) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    d = np.load(out)
    _compare({k: d[k] for k in d.files}, meshes["1"], "2 processes")
