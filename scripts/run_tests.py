"""Run every tests/test_*.py in its own pytest process, a few at a time, and sum up.

One process per file: a single process for the whole suite builds and compiles every model
of all eight in turn, and after ~400 tests XLA's CPU compiler crashed (segmentation fault) on
a program that compiles fine in a fresh process. Two at a time: one process alone keeps the
two cores of a CI machine busy only about 70% of the time (compilation, Python, small
kernels), so a second one fills the gaps. The slowest files start first.

    python scripts/run_tests.py [--jobs N]      (SAMV2_TEST_JOBS also sets N; default 2)
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Longest first, so that no long file starts last (seconds on a 2-core machine, roughly).
SLOW_FIRST = ["train/test_train_forward.py", "predictors/test_video.py",
              "train/test_pipeline_devices.py", "automatic/test_amg_parity.py",
              "train/test_train_memory.py", "test_readme.py", "train/test_pipeline_resume.py",
              "predictors/test_streaming.py", "tracking/policies/test_mem_tracking.py",
              "app/test_cli_track.py", "predictors/test_image.py", "tracking/test_step.py",
              "tracking/test_bank.py", "modeling/test_hiera.py", "modeling/test_image_encoder.py",
              "modeling/test_mask_decoder.py"]


def ordered(files: list[Path]) -> list[Path]:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    def key(p: Path):
        return rank.get(p.relative_to(ROOT / "tests").as_posix(), len(rank)), str(p)

    return sorted(files, key=key)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("SAMV2_TEST_JOBS", "2")))
    args = ap.parse_args(argv)
    jobs = max(1, args.jobs)
    files = ordered(sorted((ROOT / "tests").rglob("test_*.py")))
    todo: queue.Queue = queue.Queue()
    for f in files:
        todo.put(f)
    failed: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def worker(k: int) -> None:
        env = dict(os.environ)
        # Each lane its own compilation cache: never read an entry another process is
        # still writing.
        base = env.get("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, f"lane{k}")
        # Two processes share the cores: idle OpenMP threads must sleep, not spin.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        while True:
            try:
                f = todo.get_nowait()
            except queue.Empty:
                return
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   str(f.relative_to(ROOT))], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            took = time.perf_counter() - t
            with lock:  # whole reports, never interleaved
                status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
                print(f"== {f.relative_to(ROOT)}: {status} in {took:.0f} s", flush=True)
                print(done.stdout.rstrip(), flush=True)
                if done.returncode != 0:
                    failed.append(str(f.relative_to(ROOT)))

    lanes = [threading.Thread(target=worker, args=(k,)) for k in range(jobs)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    print(f"== {len(files)} test files in {time.perf_counter() - start:.0f} s, "
          f"{jobs} at a time")
    if failed:
        print("FAILED: " + " ".join(sorted(failed)))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
