"""Per-frame tracking time of the reference SAM2Long implementation (Mark12Ding/SAM2Long, its
own modified SAM 2 package, PyTorch) against ours (`SAM2VideoPredictor` with
`Sam2LongPolicy`), on the same model weights and the same frames, in one run.

Usage: python benchmarks/sam2long_reference.py --reference PATH_TO_SAM2LONG [--size 512]
       [--frames 12] [--rounds 2] [--out benchmarks/results/sam2long_reference.md]

PATH_TO_SAM2LONG is a local copy of the reference repository (only its `sam2/` folder is
used, by running it). Its package is loaded as scripts/reference/sam2long.py does: copied
to a temporary folder with its hard-coded 64x64 memory-token count set to that of --size
(nothing to change at its native 1024), sam2.1 tiny with every tensor re-drawn as
tests/official.py does and the object-score bias shifted by that script's SHIFT (so that
some frames are uncertain and the pathways branch), its published settings (3 pathways,
iou_thre 0.1, uncertainty 2), a mask prompt on frame 0. Ours gets the same weights from the
installed official SAM 2 re-drawn the same way; the run checks that both hold the same
tensors and compares the best pathway's mask on frame 1.

The reference's `sam2` package conflicts with the installed official one, so each side runs
in its own child process of this script (the same conditions for both), in alternating
rounds (this host is noisy). Each child tracks the video once untimed (ours compiles then)
and once timed; the first 2 tracked frames are left out. Our official policy is timed in
the same child as ours, for context. Writes benchmarks/results/sam2long_reference.md.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# torch's OpenMP threads spin while waiting, which on a shared host slows the reference by
# far more than ours (benchmarks/video_tracking.py); set before torch is imported, and
# inherited by the children. The reference's progress bars would only add noise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MODEL = "sam2.1_hiera_tiny"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
H, W = 300, 420
SKIP = 2  # tracked frames left out of the per-frame times (compilation, caches)
# SAM2Long's published num_pathway, iou_thre, uncertainty (Sam2LongPolicy's defaults; the
# ours child checks that they agree). Kept here so the reference child never imports jax.
PUBLISHED = (3, 0.1, 2.0)


@functools.cache
def _script():
    """scripts/reference/sam2long.py: its reference loader and object-score shift, so the
    benchmark builds the reference exactly as the stored test outputs were made."""
    spec = importlib.util.spec_from_file_location(
        "sam2long_reference_script", ROOT / "scripts/reference/sam2long.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _shift() -> float:
    return float(_script().SHIFT)


def _prompt() -> np.ndarray:
    import video_scripts as vs

    return vs.disk_mask(H, W, 0.45 * H, 0.5 * W, 0.2 * H)


def _checksum(model) -> dict:
    return {"keys": list(model.state_dict()),
            "sums": [float(v.double().abs().sum()) for v in model.state_dict().values()]}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- children ---------------------------------------------------------------------------


def _reference_child(args) -> dict:
    import torch


    tmp = Path(tempfile.mkdtemp())
    try:
        pred = _script().build_reference_predictor(Path(args.reference), args.size, tmp)

        # its propagate_in_video returns all masks at the end: time its per-frame inference
        frame_times = []
        inner = pred._run_single_frame_inference

        def timed(*a, **k):
            t = time.perf_counter()
            out = inner(*a, **k)
            frame_times.append(time.perf_counter() - t)
            return out

        pred._run_single_frame_inference = timed

        def track():
            state = pred.init_state(args.frames_dir)
            state["num_pathway"], state["iou_thre"], state["uncertainty"] = PUBLISHED
            pred.add_new_mask(state, 0, 1, _prompt())
            frame_times.clear()
            t = time.perf_counter()
            with torch.no_grad():
                pred.propagate_in_video(state, start_frame_idx=0)
            return list(frame_times), time.perf_counter() - t, state

        _log(f"reference: built at {args.size}, warm-up propagation")
        track()
        times, total, state = track()
        # frame 1's best pathway (column 0) at video resolution, as the reference outputs it
        first = state["output_dict"]["non_cond_frame_outputs"][1]["pred_masks"][..., 0]
        np.save(args.result, pred._get_orig_video_res_output(state, first)[1].float().numpy()[0, 0])
        return {"reference": {"frames": times[SKIP:], "total": total}, **_checksum(pred)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ours_child(args) -> dict:
    from samv2_jax import SAM2VideoPredictor
    from samv2_jax.tracking.policies import Sam2LongPolicy

    import official
    import video_scripts as vs

    policy = Sam2LongPolicy()
    if (policy.pathways, policy.iou_threshold, policy.uncertainty) != PUBLISHED:
        raise SystemExit(f"Sam2LongPolicy's defaults are not SAM2Long's published {PUBLISHED}")
    theirs = official.official_video_predictor(MODEL, args.size, fill_hole_area=0,
                                               obj_score_shift=_shift())
    sums = _checksum(theirs)
    long = vs.ours_for(theirs, fill_hole_area=0, policy=policy)
    preds = {"sam2long": long, "official": SAM2VideoPredictor(long.model, fill_hole_area=0)}

    def track(pred):
        state = pred.init_state(args.frames_dir)
        pred.add_new_mask(state, 0, 1, _prompt())
        times, first = [], None
        t0 = last = time.perf_counter()
        for f, _, masks in pred.propagate_in_video(state):
            now = time.perf_counter()
            if f > 0:
                times.append(now - last)
            if f == 1:
                first = masks[0, 0]
            last = now
        return times, last - t0, first

    _log(f"ours: built at {args.size}, warm-up propagations (compiling)")
    for pred in preds.values():
        track(pred)
    out = {}
    for name, pred in preds.items():
        times, total, first = track(pred)
        out[name] = {"frames": times[SKIP:], "total": total}
        if name == "sam2long":
            np.save(args.result, np.asarray(first, np.float32))
    return {**out, **sums}


# --- parent -----------------------------------------------------------------------------


def _run_child(kind: str, args, folder: str, result: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--reference", args.reference, "--size", str(args.size),
           "--frames", str(args.frames), "--frames-dir", folder, "--result", str(result)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode})")
    _log(f"{kind} child done in {time.perf_counter() - t:.0f} s")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _reference_commit(path: str) -> str:
    git = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return git.stdout.strip() if git.returncode == 0 else "a copy without git history"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="local copy of Mark12Ding/SAM2Long")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/sam2long_reference.md"))
    ap.add_argument("--child", choices=("reference", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--frames-dir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.size % 16:
        ap.error("--size must be a multiple of 16")
    if args.frames < SKIP + 2:
        ap.error(f"--frames must be at least {SKIP + 2} (the first {SKIP} tracked are not timed)")
    if not (Path(args.reference) / "sam2/modeling/memory_attention.py").is_file():
        ap.error(f"{args.reference} has no sam2/ package of SAM2Long")
    if args.child:
        res = (_reference_child if args.child == "reference" else _ours_child)(args)
        print(json.dumps(res))
        return

    import official
    import video_scripts as vs

    load = [os.getloadavg()]
    tmp = Path(tempfile.mkdtemp())
    try:
        folder = vs.write_jpeg_folder(vs.make_frames(args.frames, H, W), tmp / "frames")
        runs = []
        for r in range(args.rounds):
            for kind in ("reference", "ours"):
                _log(f"round {r + 1}/{args.rounds}: {kind}")
                runs.append(_run_child(kind, args, folder, tmp / f"{kind}.npy"))
        first = {k: np.load(tmp / f"{k}.npy") for k in ("reference", "ours")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load.append(os.getloadavg())

    per = {k: [t for run in runs if k in run for t in run[k]["frames"]]
           for k in ("reference", "sam2long", "official")}
    whole = {k: statistics.median(run[k]["total"] / (args.frames - 1) for run in runs if k in run)
             for k in per}
    med = {k: statistics.median(v) for k, v in per.items()}
    ref, ours = runs[0], runs[1]
    same_keys = ref["keys"] == ours["keys"]
    same_sums = same_keys and np.allclose(ref["sums"], ours["sums"], rtol=1e-12, atol=0)
    if same_sums:
        weights = f"identical ({len(ref['keys'])} tensors, same names, same abs-sums)"
    elif same_keys:
        weights = "DIFFERENT values under the same tensor names"
    else:
        only = sorted(set(ref["keys"]) ^ set(ours["keys"]))
        weights = f"DIFFERENT tensor names ({len(only)} not on both sides: {only[:5]})"
    rel = official.rel_err(first["ours"], first["reference"])
    iou = vs.mask_iou(first["ours"], first["reference"])

    n = args.frames - 1 - SKIP
    lines = [
        f"# SAM2Long: the reference implementation against ours ({MODEL} at {args.size}, "
        f"1 object, {args.frames} frames, {args.rounds} alternating round(s))", "",
        "Host: a shared 2-core CPU (another engineer's benchmarks ran beside this one), so "
        "the numbers are noisy; load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.2f}' for x in load[0])} at the start, "
        f"{', '.join(f'{x:.2f}' for x in load[1])} at the end.", "",
        "| implementation | s / frame (median) | s / frame (whole propagation) |",
        "| --- | ---: | ---: |",
        f"| reference SAM2Long (PyTorch) | {med['reference']:.4f} | {whole['reference']:.4f} |",
        f"| ours, `Sam2LongPolicy()` | {med['sam2long']:.4f} | {whole['sam2long']:.4f} |",
        f"| ratio reference / ours | {med['reference'] / med['sam2long']:.2f} | "
        f"{whole['reference'] / whole['sam2long']:.2f} |",
        f"| ours, official policy (context) | {med['official']:.4f} | "
        f"{whole['official']:.4f} |", "",
        f"Settings: reference Mark12Ding/SAM2Long from {args.reference} "
        f"({_reference_commit(args.reference)}), its "
        f"memory-token constant set to ({args.size}/16)^2 = {(args.size // 16) ** 2}; "
        f"sam2.1 tiny, every tensor re-drawn (seed 0), object-score bias +{_shift():g}; "
        f"pathways, iou_thre, uncertainty = {PUBLISHED}; a {H}x{W} video "
        "(`make_frames`), a mask prompt on frame 0, no hole filling; torch "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. Each side in its own process, "
        "reference first in each round; each process tracks once untimed, then once timed.",
        "",
        f"Median: over tracked frames {SKIP + 1}..{args.frames - 1} of every timed run "
        f"({n} per run); reference: its per-frame `_run_single_frame_inference` (it returns "
        "all masks at the end), ours: the time between yielded frames (including the mask "
        "at video resolution on the host). Whole propagation: `propagate_in_video` from "
        f"start to end divided by the {args.frames - 1} tracked frames (prompt-frame memory "
        "encoding and the outputs included), median over runs.", "",
        f"Same weights: {weights}. Frame 1, best pathway, ours against the reference: "
        f"mask IoU {iou:.4f}, max |difference| / max |reference| of the logits {rel:.1e}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
