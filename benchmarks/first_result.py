"""A user's first result: whole processes, ours against the official, alternating rounds.

    python benchmarks/first_result.py [--rounds 3] [--image ../shared/data/images/truck.jpg]
        [--video ../shared/data/videos/bedroom.mp4] [--large]

Rows:
- one-shot segmentation of a photo from one click, the whole process (imports, loading the
  model, encoding, predicting, writing the PNG): the official script (`build_sam2` +
  `SAM2ImagePredictor`, sam2.1 tiny, float32) against `samv2 segment` with a cold cache
  (a fresh cache folder every round) and a warm one (the folder of an earlier run);
- the first tracked frame of `samv2 track` (from the process start to the first mask PNG)
  against a steady frame of the same run, warm cache;
- with --large: sam2.1 large at 1024, trace / lower / compile of the image encoder and of
  the tracking step, cold (nothing cached), warm (JAX's persistent cache) and from the
  program cache (`predictors.aot`: no trace at all).

No real checkpoint is needed: the official model with every tensor re-drawn (speed does not
depend on the values), the object-score bias shifted so objects are present, saved as an
official `.pt` for the official script and converted for ours. Writes
benchmarks/results/first_result.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NAME = "sam2.1_hiera_tiny"

OFFICIAL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import official
    official.install_torchvision_standin()
    import numpy as np
    import torch
    from PIL import Image
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_sam2({config!r}, {ckpt!r}, device="cpu")
    predictor = SAM2ImagePredictor(model)
    image = np.asarray(Image.open({image!r}).convert("RGB"))
    with torch.inference_mode():
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(point_coords=np.array([[{x}, {y}]]),
                                             point_labels=np.array([1]))
    Image.fromarray(masks[int(np.argmax(scores))].astype(np.uint8)).save({out!r})
""")


# The console script pip installed beside this interpreter (what a user of a virtual
# environment runs), not a version manager's shim in front of it: the official script runs
# as `sys.executable script.py`, so both sides start the same way.
_BESIDE = Path(sys.executable).with_name("samv2")
SAMV2 = str(_BESIDE) if _BESIDE.is_file() else "samv2"


def _checkpoints(work: Path):
    """(official .pt, converted directory) holding the same re-drawn weights."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from samv2_jax.weights.official import convert_state_dict
    from samv2_jax.weights.store import Model, save_model

    import official

    model = official.build_official(NAME, 1024)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    last = sorted(k for k in sd if k.startswith("sam_mask_decoder.pred_obj_score_head")
                  and k.endswith("bias"))[-1]
    sd[last] += 3.0
    pt = work / f"{NAME}.pt"
    torch.save({"model": sd}, pt)
    cfg, params = convert_state_dict({k: v.numpy() for k, v in sd.items()})
    converted = save_model(Model(cfg, params), work / "converted")
    return pt, converted, official._CONFIG_FILES[NAME]


def _timed(cmd, env=None, cwd=None) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{done.stdout}\n{done.stderr}")
    return took


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["XDG_CACHE_HOME"] = str(cache)
    env.pop("SAMV2_JAX_NO_CACHE", None)
    return env


def segment_rows(args, work: Path, pt: Path, converted: Path, config: str):
    from PIL import Image

    w, h = Image.open(args.image).size
    x, y = args.point or (w // 2, h // 2)
    script = work / "official_one_shot.py"
    script.write_text(OFFICIAL_SCRIPT.format(tests=str(ROOT / "tests"), config=config,
                                             ckpt=str(pt), image=str(args.image), x=x, y=y,
                                             out=str(work / "official.png")))
    ours = [SAMV2, "segment", str(args.image), "--point", f"{x},{y}", "--out",
            str(work / "ours.png"), "--model", str(converted), "--no-overlay"]
    warm = work / "warm-cache"
    _timed(ours, env=_env(warm))  # fills the warm cache
    times = {"official": [], "cold": [], "warm": []}
    for r in range(args.rounds):  # alternating: the host drifts between identical runs
        times["official"].append(_timed([sys.executable, str(script)]))
        cold = work / f"cold-cache-{r}"
        times["cold"].append(_timed(ours, env=_env(cold)))
        shutil.rmtree(cold, ignore_errors=True)
        times["warm"].append(_timed(ours, env=_env(warm)))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    return times


def track_rows(args, work: Path, converted: Path):
    """Seconds from the process start to the first mask PNG, and per steady frame."""
    video = work / "clip.mp4"
    subprocess.run(["samv2", "sample", str(video), "--frames", "8", "--overwrite"], check=True,
                   capture_output=True)
    warm = work / "warm-cache"
    cmd = [SAMV2, "track", str(video), "--point", "0:320,240", "--max-frames", "8",
           "--model", str(converted), "--no-overlay", "--no-json", "-q", "--overwrite"]
    rows = []
    for r in range(args.rounds + 1):  # the first run fills the cache for the track programs
        out = work / f"track-{r}"
        start = time.time()
        subprocess.run(cmd + ["--out", str(out)], env=_env(warm), check=True,
                       capture_output=True)
        stamps = [p.stat().st_mtime for p in sorted((out / "masks").glob("*.png"))]
        first = stamps[0] - start
        steady = (stamps[-1] - stamps[2]) / (len(stamps) - 3)
        if r:
            rows.append((first, steady))
            print(f"track round {r}: first frame {first:.2f} s, steady {steady:.2f} s/frame",
                  flush=True)
    return rows


def large_rows(work: Path):
    """Trace / lower / compile of sam2.1 large at 1024: image encoder and tracking step."""
    code = textwrap.dedent("""
        import json, sys, time
        import jax, jax.numpy as jnp
        from samv2_jax.app.compilation_cache import enable_compilation_cache
        from samv2_jax.predictors import aot
        mode = sys.argv[1]
        if mode != "cold":
            enable_compilation_cache(sys.argv[2])
        if mode != "programs":
            aot.disable()
        from samv2_jax.config import get_config
        from samv2_jax.weights.layout import init_params
        from samv2_jax.tracking.bank import empty_bank
        from samv2_jax.predictors import programs
        cfg = get_config("sam2.1_hiera_large")
        params = init_params(cfg, jax.random.PRNGKey(0))
        img = jnp.zeros((1, 1024, 1024, 3), jnp.float32)
        bank = empty_bank(cfg, 1, 16)
        out = {}
        def measure(name, program, *a, **k):
            t = time.perf_counter()
            if mode == "programs":
                program(*a, **k)  # loads the executable, or compiles and keeps it
                out[name] = {"load or compile": time.perf_counter() - t}
                return
            traced = program.jitted.trace(*a, **k); t1 = time.perf_counter()
            lowered = traced.lower(); t2 = time.perf_counter()
            lowered.compile(); t3 = time.perf_counter()
            out[name] = {"trace": t1 - t, "lower": t2 - t1, "compile": t3 - t2}
        measure("image encoder", programs.encode_image, params, cfg, img)
        measure("tracking step", programs.track_image_step_inplace, params, cfg, bank, img, 3,
                jnp.full((1,), 3, jnp.int32), jnp.ones((1,), bool), num_frames=100,
                max_cond=1, fill_hole_area=8)
        print("RESULT", json.dumps(out))
    """)
    script = work / "large.py"
    script.write_text(code)
    cache = work / "large-cache"
    results = {}
    for mode in ("cold", "warm-fill", "warm", "programs-fill", "programs"):
        run = mode.removesuffix("-fill")
        done = subprocess.run([sys.executable, str(script), run, str(cache)], text=True,
                              capture_output=True, env=_env(work / "unused"))
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        if not mode.endswith("-fill"):
            import json

            line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")][-1]
            results[mode] = json.loads(line.split(" ", 1)[1])
            print(mode, results[mode], flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image", type=Path, default=SHARED / "images" / "truck.jpg")
    ap.add_argument("--point", type=int, nargs=2, default=None)
    ap.add_argument("--large", action="store_true", help="also time sam2.1 large at 1024")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "first_result.md")
    args = ap.parse_args(argv)
    if not args.image.is_file():
        args.image = Path(tempfile.mkdtemp()) / "photo.jpg"
        subprocess.run(["samv2", "sample", str(args.image)], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="first-result-"))
    try:
        pt, converted, config = _checkpoints(work)
        seg = segment_rows(args, work, pt, converted, config)
        track = track_rows(args, work, converted)
        large = large_rows(work) if args.large else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in seg.items()}
    first = statistics.median(f for f, _ in track)
    steady = statistics.median(s for _, s in track)
    lines = [
        "# First result: whole processes, ours against the official",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end; {args.rounds} alternating rounds "
        f"(medians; every round listed below). {NAME} at 1024, float32, re-drawn weights. "
        f"Image: {args.image.name}. Written by `python benchmarks/first_result.py`.",
        "",
        "| what the user does | official | ours | ours / official |",
        "|---|---|---|---|",
        f"| one-shot segment, whole process, warm cache | {med['official']:.2f} s | "
        f"{med['warm']:.2f} s | {med['warm'] / med['official']:.2f}x |",
        f"| one-shot segment, whole process, cold cache | {med['official']:.2f} s | "
        f"{med['cold']:.2f} s | {med['cold'] / med['official']:.2f}x |",
        f"| `samv2 track`: first frame (from process start) / steady frame, warm cache | | "
        f"{first:.2f} s / {steady:.2f} s | first = {first / steady:.2f} steady frames |",
        "",
        "Rounds (official, ours cold, ours warm), seconds: "
        + "; ".join(f"{o:.2f}, {c:.2f}, {w:.2f}" for o, c, w in
                    zip(seg["official"], seg["cold"], seg["warm"])) + ".",
        "Track rounds (first, steady): "
        + "; ".join(f"{f:.2f}, {s:.2f}" for f, s in track) + ".",
    ]
    if large:
        lines += ["", "## sam2.1 large at 1024: getting the programs ready, seconds", "",
                  "| program | cold: trace / lower / compile | warm (JAX cache): trace / "
                  "lower / compile | program cache: load |", "|---|---|---|---|"]
        for name in large["cold"]:
            c, w, p = large["cold"][name], large["warm"][name], large["programs"][name]
            lines.append(f"| {name} | {c['trace']:.1f} / {c['lower']:.1f} / {c['compile']:.1f}"
                         f" | {w['trace']:.1f} / {w['lower']:.1f} / {w['compile']:.1f} | "
                         f"{p['load or compile']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
