"""Does the data pipeline keep up with the training step?

1. The loader alone: clips per second of the full official recipe (8-frame windows, up to 3
   objects, every augmentation, square resize to --image-size) from a DAVIS-style folder of
   854x480 JPEG videos, with 0, 1 and 2 grain worker processes.
2. With --with-step: a short `samv2_jax.train.run` (sam2.1 tiny, random weights) whose
   metrics.jsonl records, per step, how long the loop waited for its batch (`data_wait_s`)
   and the whole step time; the device never waits when the wait is a negligible share.

    python benchmarks/train_data.py [--image-size 1024] [--batches 12] [--with-step]

Writes benchmarks/results/train_data.md. A step of sam2.1 tiny at 1024 with 8 frames takes
seconds even on a GPU (benchmarks/train_step.py), so the loader must give at least one clip
per step per batch element: the table says how many workers that needs on this machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def loader_rate(spec: str, image_size: int, workers: int, batches: int) -> tuple[float, float]:
    """(clips per second after the first batch, seconds to the first batch)."""
    from samv2_jax.train.data.pipeline import LoaderConfig, make_train_stream

    cfg = LoaderConfig(global_batch_size=1, image_size=image_size, num_frames=8,
                       max_num_objects=3, num_workers=workers, seed=0)
    it = iter(make_train_stream([spec], cfg)[0])
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches / (time.perf_counter() - t0)
    del it
    return rate, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--with-step", action="store_true")
    ap.add_argument("--step-size", type=int, default=256, help="image size of the --with-step run")
    ap.add_argument("--step-count", type=int, default=8)
    args = ap.parse_args()

    from samv2_jax.train.data import synthetic

    work = Path(tempfile.mkdtemp(prefix="samv2_train_data_"))
    try:
        root = synthetic.make_davis_like(work / "davis", num_videos=args.videos, num_frames=24,
                                         height=480, width=854, num_objects=3, seed=0)
        spec = f"davis:{root}"
        rows = []
        for workers in (0, 1, 2):
            rate, first = loader_rate(spec, args.image_size, workers, args.batches)
            rows.append((workers, rate, first))
            print(f"workers {workers}: {rate:.2f} clips/s (first batch {first:.1f} s)")
        lines = ["# Training data pipeline throughput", "",
                 f"`python benchmarks/train_data.py --image-size {args.image_size}`: clips of 8 "
                 "frames, up to 3 objects, the official augmentations, from 854x480 JPEG "
                 f"videos, resized to {args.image_size}; one batch element per clip. "
                 "Provisional: a shared, loaded 2-core machine.", "",
                 "| grain workers | clips / s | first batch (s) |", "|---|---|---|",
                 *[f"| {w} | {r:.2f} | {f:.1f} |" for w, r, f in rows], ""]
        if args.with_step:
            from samv2_jax.train.loop import RunConfig, run

            out = work / "run"
            run(RunConfig(model="sam2.1_hiera_tiny", init="random", image_size=args.step_size,
                          data=(spec,), steps=args.step_count, batch_size=1, num_frames=8,
                          max_num_objects=3, save_every=10**9, out=str(out), num_workers=2,
                          progress=False, tensorboard=False))
            m = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            steady = [r for r in m if "loss" in r][1:]  # the first step compiles
            wait = np.asarray([r["data_wait_s"] for r in steady])
            step = np.asarray([r["step_s"] for r in steady])
            lines += [f"In the training loop (sam2.1 tiny at {args.step_size}, 8 frames, "
                      f"2 workers, {len(steady)} steps after the first): median step "
                      f"{np.median(step):.2f} s, median wait for data {np.median(wait) * 1000:.1f}"
                      f" ms, at most {wait.max() * 1000:.1f} ms "
                      f"({100 * wait.sum() / step.sum():.2f}% of the time).", ""]
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_data.md").write_text("\n".join(lines))
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
