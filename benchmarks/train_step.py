"""Seconds per training step and peak memory: ours against the official training code.

One step is forward + backward + optimizer update on one clip (8 frames, 3 objects, sam2.1
tiny with every tensor re-drawn):
- official: `training.model.sam2.SAM2Train` (train mode, the recipe's dropout 0.1 and
  drop_path 0.1) + `MultiStepMultiMasksAndIous` + `backward()` + gradient clipping + AdamW;
- ours: `samv2_jax.train.loop.make_train_step` (loss_fn under value_and_grad + the recipe's
  optax optimizer) jit-compiled, as it is (`ours`) and memory-lean (`ours_remat`: every part
  in REMAT_PARTS rematerialised and the image encoder run one frame at a time,
  `encoder_frames_per_call=1`).
Both sides use the same prompt structure on every step (point input, two initial
conditioning frames, each corrected with 7 clicks: the most expensive path of the recipe),
drawn by each side's own sampler.

Every measurement runs in a child process of its own, so that its peak RSS (ru_maxrss) is
that variant's alone; the variants alternate round by round. Our step is compiled once in a
child that writes JAX's persistent compilation cache (its time is the compile time
reported); the timed children load it, so their peak memory is the step's, not XLA's.

    python benchmarks/train_step.py [--image-size 512] [--rounds 2] [--steps 2]

Writes benchmarks/results/train_step.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "sam2.1_hiera_tiny"
VARIANTS = ("official", "ours", "ours_remat")


# The prompt simulation of every step (the rest as the recipe has it), for both sides. The
# official child reads it without importing samv2_jax (so no JAX in its memory).
TRAINING = dict(prob_to_use_pt_input_for_train=1.0, prob_to_use_box_input_for_train=0.5,
                num_init_cond_frames_for_train=2, rand_init_cond_frames_for_train=False,
                num_frames_to_correct_for_train=2, rand_frames_to_correct_for_train=False,
                num_correction_pt_per_frame=7, prob_to_sample_from_gt_for_train=0.1,
                add_all_frames_to_correct_as_cond=True, freeze_image_encoder=False,
                drop_path_rate=0.1, memory_attention_dropout=0.1)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_config(remat: bool):
    from samv2_jax.train import TrainConfig
    from samv2_jax.train.config import REMAT_PARTS

    if not remat:
        return TrainConfig(**TRAINING)
    # The memory-lean set-up: every part rematerialised, the encoder a frame at a time.
    return TrainConfig(**TRAINING, remat=REMAT_PARTS, encoder_frames_per_call=1)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _build_official(image_size: int):
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "train"))
    import train_oracle

    import official

    official.install_torchvision_standin()
    from sam2.build_sam import build_sam2

    c = argparse.Namespace(**TRAINING)
    extra = [f"++model.image_size={image_size}", *train_oracle.train_overrides(c),
             f"++model.image_encoder.trunk.drop_path_rate={c.drop_path_rate}"]
    model = build_sam2(official._CONFIG_FILES[MODEL], None, device="cpu", mode="eval",
                       hydra_overrides_extra=extra)
    official.randomize_(model, 0)
    model.train()
    return model


def prepare(work: Path, args) -> None:
    """The weights (official names) and the clip, written once for every child."""
    from samv2_jax.train.data import synthetic

    model = _build_official(args.image_size)
    np.savez(work / "weights.npz", **{k: v.detach().numpy() for k, v in
                                      model.state_dict().items()})
    rng = np.random.default_rng(0)
    frames, labels = synthetic.moving_objects_video(rng, args.frames, args.image_size,
                                                    args.image_size, args.objects)
    masks = np.stack([labels == k + 1 for k in range(args.objects)], 1)
    np.savez(work / "clip.npz", frames=frames, masks=masks)


def _clip(work: Path):
    d = np.load(work / "clip.npz")
    return d["frames"], d["masks"]


def run_official(work: Path, args) -> dict:
    import torch

    t0 = time.perf_counter()
    model = _build_official(args.image_size)
    weights = np.load(work / "weights.npz")
    model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files})
    import train_oracle

    frames, masks = _clip(work)
    images = ((frames.astype(np.float32) / 255 - np.float32(IMAGENET_MEAN))
              / np.float32(IMAGENET_STD)).astype(np.float32)
    batch = train_oracle.datapoint(images, masks)
    loss_mod = train_oracle.official_loss_module(None)  # the recipe's weights
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        losses = loss_mod(model(batch), batch.masks)
        losses["core_loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()
        return float(losses["core_loss"])

    return _timed(step, args.steps, {"build_s": time.perf_counter() - t0})


def run_ours(work: Path, args, remat: bool, compile_only: bool) -> dict:
    import jax

    jax.config.update("jax_compilation_cache_dir", str(work / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    t0 = time.perf_counter()
    from samv2_jax.train import make_optimizer
    from samv2_jax.train.loop import make_train_step
    from samv2_jax.weights.official import convert_state_dict

    weights = np.load(work / "weights.npz")
    cfg, params = convert_state_dict({k: weights[k] for k in weights.files},
                                     image_size=args.image_size)
    params = jax.device_put(params)
    train_cfg = train_config(remat)
    optimizer = make_optimizer(params, cfg, "official", total_steps=1000, train_cfg=train_cfg)
    opt_state = optimizer.init(params)
    frames, masks = _clip(work)
    batch = jax.device_put({"images": frames[None], "masks": masks[None],
                            "obj_valid": np.ones((1, masks.shape[1]), bool)})
    key = jax.random.PRNGKey(0)
    fn = jax.jit(make_train_step(cfg, train_cfg, optimizer), donate_argnums=(0, 1, 2))
    info = {"build_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    compiled = fn.lower(params, opt_state, key, batch).compile()
    info["compile_s"] = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    if mem is not None:
        info["temp_bytes"] = int(mem.temp_size_in_bytes)
    if compile_only:
        info["peak_rss"] = _peak_rss()
        return info
    state = {"params": params, "opt": opt_state, "key": key}

    def step():
        state["params"], state["opt"], state["key"], metrics = compiled(
            state["params"], state["opt"], state["key"], batch)
        return float(metrics["loss"])  # waits for the step

    return _timed(step, args.steps, info)


def _timed(step, n: int, info: dict) -> dict:
    info["rss_before_steps"] = _rss()
    t0 = time.perf_counter()
    info["first_loss"] = step()
    info["first_step_s"] = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    info["step_s"] = times
    info["peak_rss"] = _peak_rss()
    return info


def child(variant: str, work: Path, args, compile_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--work", str(work),
           "--image-size", str(args.image_size), "--frames", str(args.frames),
           "--objects", str(args.objects), "--steps", str(args.steps)]
    if compile_only:
        cmd.append("--compile-only")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(args) -> None:
    work = Path(args.work)
    if args.worker == "prepare":
        prepare(work, args)
        out = {}
    elif args.worker == "official":
        out = run_official(work, args)
    else:
        out = run_ours(work, args, args.worker == "ours_remat", args.compile_only)
    print(json.dumps(out))


def _gib(b) -> str:
    return f"{b / 2**30:.2f}"


def report(args, compile_runs: dict, runs: dict, total_s: float) -> str:
    med = {v: statistics.median(t for r in runs[v] for t in r["step_s"]) for v in runs}
    peak = {v: max(r["peak_rss"] for r in runs[v]) for v in runs}
    off = "official"
    lines = [
        "# Training step: ours vs the official training code",
        "",
        f"`python benchmarks/train_step.py --image-size {args.image_size} --rounds "
        f"{args.rounds} --steps {args.steps}`: {MODEL} (re-drawn weights) at "
        f"{args.image_size}, one clip of {args.frames} frames with {args.objects} objects, "
        "point input on 2 initial conditioning frames each corrected with 7 clicks, dropout "
        "and drop_path 0.1. A step is forward + backward + clipping + AdamW. Each variant "
        "runs in its own child process (peak RSS = its ru_maxrss); variants alternate "
        f"round by round; median of {args.rounds} x {args.steps} steps after a first step. "
        f"Machine: {os.cpu_count()} CPU cores, shared (provisional). Total run "
        f"{total_s / 60:.1f} min.",
        "",
        "| variant | s / step (median) | steps/s vs official | peak RSS (GiB) | "
        "peak vs official | first step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for v in runs:
        first = statistics.median(r["first_step_s"] for r in runs[v])
        lines.append(f"| {v} | {med[v]:.2f} | {med[off] / med[v]:.2f}x | {_gib(peak[v])} | "
                     f"{peak[v] / peak[off]:.2f}x | {first:.2f} |")
    lines += ["", "Compile time of our step (a cold compile in a child of its own, written to "
              "the persistent cache the timed children load):", "",
              "| variant | compile (s) | XLA temp buffers (GiB) | peak RSS while compiling (GiB) "
              "| load from cache in the timed children (s) |", "|---|---|---|---|---|"]
    for v, c in compile_runs.items():
        load = statistics.median(r["compile_s"] for r in runs[v])
        lines.append(f"| {v} | {c['compile_s']:.1f} | {_gib(c.get('temp_bytes', 0))} | "
                     f"{_gib(c['peak_rss'])} | {load:.1f} |")
    lines += ["", "Per-round step times (s):", ""]
    for v in runs:
        lines.append(f"- {v}: " + ", ".join(
            "[" + ", ".join(f"{t:.2f}" for t in r["step_s"]) + "]" for r in runs[v]))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per child")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(RESULTS / "train_step.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or "official" not in variants:
        raise SystemExit(f"--variants: choose from {VARIANTS}, 'official' included")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        child("prepare", work, args)
        compile_runs = {}
        for v in variants:
            if v != "official":
                compile_runs[v] = child(v, work, args, compile_only=True)
                print(f"{v}: compiled in {compile_runs[v]['compile_s']:.1f} s", flush=True)
        runs = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                runs[v].append(child(v, work, args))
                print(f"round {r} {v}: {runs[v][-1]['step_s']} s, peak "
                      f"{_gib(runs[v][-1]['peak_rss'])} GiB", flush=True)
    text = report(args, compile_runs, runs, time.perf_counter() - t_start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
