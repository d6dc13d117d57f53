"""`samv2 track` with and without the allocator setting of `samv2_jax.app.host_memory`.

    python benchmarks/host_memory.py [--image-size 512] [--frames 30] [--rounds 2]
        [--video ../shared/data/videos/bedroom.mp4]

Whole processes, alternating rounds: the command as installed (track keeps freed memory for
reuse) against the same command with MALLOC_ARENA_MAX set to glibc's own default (8 per
core), which makes `keep_freed_memory` leave glibc as it is. Per run: wall seconds, system
(kernel) CPU seconds and the peak resident memory, from the child's own rusage. Random
weights (sam2.1 tiny, object-score bias shifted so the object is present); a warm compile
cache, filled by a first run. Writes benchmarks/results/host_memory.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from track_command import _clip, _model_dir  # noqa: E402  (the same model and clip)


def _run(argv, env) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"samv2 track failed:\n{err}")
    return {"wall": wall, "sys": usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--video", default=str(ROOT.parent / "shared/data/videos/bedroom.mp4"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/host_memory.md"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = _model_dir("sam2.1_hiera_tiny", tmp)
        clip = tmp / "clip.mp4"
        h, w = _clip(Path(args.video), args.frames, clip)[0].shape[:2]
        cmd = [sys.executable, "-m", "samv2_jax.app.cli", "track", str(clip), "--point",
               f"0:{w * 2 // 5},{h * 3 // 5}", "--model", str(model_dir), "--image-size",
               str(args.image_size), "--no-overlay", "--no-json", "-q", "--overwrite",
               "--out", str(tmp / "out")]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
        base["XDG_CACHE_HOME"] = str(tmp / "cache")
        sides = {"kept (samv2 track)": base,
                 "glibc default": {**base, "MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))}}
        _run(cmd, base)  # fills the compile cache
        runs = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, env in (sides.items() if r % 2 == 0 else reversed(sides.items())):
                runs[name].append(_run(cmd, env))
                print(f"round {r + 1} {name}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in runs[name][-1].items()), file=sys.stderr)
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in runs.items()}
    kept, default = med["kept (samv2 track)"], med["glibc default"]
    lines = [
        "# `samv2 track` with and without the allocator setting",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; sam2.1 tiny at "
        f"{args.image_size}, {args.frames} frames of {Path(args.video).name}, warm compile "
        f"cache; medians of {args.rounds} alternating rounds. Written by "
        "`python benchmarks/host_memory.py`.",
        "",
        "| allocator | wall (s) | system CPU (s) | peak RSS (MB) |",
        "|---|---|---|---|",
        *(f"| {n} | {m['wall']:.2f} | {m['sys']:.2f} | {m['peak_mb']:.0f} |"
          for n, m in med.items()),
        "",
        f"Kept / default wall time: {kept['wall'] / default['wall']:.3f}.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
