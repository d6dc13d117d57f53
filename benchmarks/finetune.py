"""Does fine-tuning learn? sam2.1 tiny from randomly drawn weights, trained with `samv2 train`'s
loop on a small dataset of objects with known masks moving over real backgrounds, J&F on
held-out clips before and after, and the loss curve.

    python benchmarks/finetune.py                       # backgrounds scikit-image ships
    python benchmarks/finetune.py --shared-data         # also the photos and video frames
                                                        # of ../shared/data (by hand only)
    python benchmarks/finetune.py --steps 60 --quick    # a smoke run

Writes benchmarks/results/finetune.md and benchmarks/results/finetune_loss.png. Training from
random weights needs a larger learning rate than the official fine-tuning recipe (5e-6 moves
random weights nowhere in a few hundred steps): the recipe's structure (AdamW, cosine to a
tenth, clipping, weight-decay groups) with a base rate of --lr for every parameter.
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
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def backgrounds(shared: bool) -> list[np.ndarray]:
    from PIL import Image

    from samv2_jax.train.data.synthetic import default_backgrounds

    out = default_backgrounds()
    if shared:
        for p in sorted((SHARED / "images").glob("*.jpg")):
            out.append(np.asarray(Image.open(p).convert("RGB")))
        frames = sorted((SHARED / "videos" / "bedroom").glob("*.jpg"))[::40]
        out += [np.asarray(Image.open(p).convert("RGB")) for p in frames]
    return out


def make_dataset(root: Path, args) -> Path:
    from samv2_jax.train.data import synthetic

    rng = np.random.default_rng(args.seed)
    bgs = backgrounds(args.shared_data)
    n = args.videos + args.val_videos
    videos = {f"video{i:03d}": synthetic.moving_objects_video(
        rng, args.video_frames, args.height, args.width, args.objects, bgs) for i in range(n)}
    names = sorted(videos)
    return synthetic.write_davis(root, videos, {"train": names[: args.videos],
                                               "val": names[args.videos:]})


def plot(metrics: list[dict], path: Path, before: dict, after: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics if "loss" in m]
    loss = np.asarray([m["loss"] for m in metrics if "loss" in m])
    k = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, loss, lw=0.8, alpha=0.4, label="loss per step")
    ax.plot(steps[k - 1:], smooth, lw=2, label=f"mean of {k} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (official objective)")
    ax.set_yscale("log")
    ax.set_title(f"sam2.1 tiny from random weights: held-out J&F "
                 f"{before['J&F']:.3f} -> {after['J&F']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=3, help="frames per training clip")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--val-videos", type=int, default=4)
    ap.add_argument("--video-frames", type=int, default=12)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared-data", action="store_true")
    ap.add_argument("--quick", action="store_true", help="no validation during training")
    ap.add_argument("--keep", default=None, help="keep the run folder here")
    args = ap.parse_args()

    from samv2_jax.config import get_config
    from samv2_jax.train.data.pipeline import eval_clips
    from samv2_jax.train.loop import RunConfig, evaluate_videos, run
    from samv2_jax.weights.layout import init_params
    from samv2_jax.weights.store import load

    work = Path(tempfile.mkdtemp(prefix="samv2_finetune_"))
    try:
        data = make_dataset(work / "data", args)
        val_spec = f"davis:{data},split=val"
        out = Path(args.keep) if args.keep else work / "run"
        recipe = {"lr": [["*", args.lr]], "layer_decay": 1.0, "warmup_steps": 10}
        config = RunConfig(model="sam2.1_hiera_tiny", init="random",
                           image_size=args.image_size, data=(f"davis:{data},split=train",),
                           val=() if args.quick else (val_spec,), recipe=recipe,
                           steps=args.steps, batch_size=args.batch_size,
                           num_frames=args.frames, max_num_objects=args.objects,
                           save_every=args.steps, keep=1,
                           val_every=0 if args.quick else max(1, args.steps // 2),
                           val_videos=args.val_videos, seed=args.seed, out=str(out),
                           num_workers=args.workers, progress=True)
        import jax

        cfg = get_config("sam2.1_hiera_tiny").replace(image_size=args.image_size)
        start_params = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(args.seed)))
        videos = list(eval_clips(val_spec, args.image_size, max_videos=args.val_videos))
        t0 = time.perf_counter()
        before = evaluate_videos(cfg, start_params, videos)
        t_eval = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = run(config)
        t_train = time.perf_counter() - t0
        model = load(out)
        after = evaluate_videos(model.config, model.params, videos)
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        RESULTS.mkdir(exist_ok=True)
        plot(metrics, RESULTS / "finetune_loss.png", before, after)
        train_rows = [m for m in metrics if "loss" in m]
        first = np.mean([m["loss"] for m in train_rows[:10]])
        last = np.mean([m["loss"] for m in train_rows[-10:]])
        step_s = np.median([m["step_s"] for m in train_rows[2:]]) if len(train_rows) > 3 else 0
        wait = np.median([m["data_wait_s"] for m in train_rows[2:]]) if len(train_rows) > 3 else 0
        vals = [m for m in metrics if "val/J&F" in m]
        lines = [
            "# Fine-tuning learns: sam2.1 tiny from random weights",
            "",
            f"`python benchmarks/finetune.py {' '.join(_argv())}` on "
            f"{'the shared data and ' if args.shared_data else ''}scikit-image backgrounds: "
            f"{args.videos} training and {args.val_videos} held-out synthetic videos "
            f"({args.video_frames} frames, {args.width}x{args.height}, {args.objects} "
            "textured objects moving, turning and occluding each other over panning real "
            "photographs); masks known exactly.",
            "",
            f"Model sam2.1_hiera_tiny at {args.image_size}, weights drawn at random "
            f"(`init_params`, seed {args.seed}); {args.steps} steps of the official objective "
            f"(clips of {args.frames} frames, batch {args.batch_size}, prompts and "
            "corrections as the official `SAM2Train`) with the official optimizer recipe's "
            f"structure at base lr {args.lr:g}; J&F as the DAVIS evaluation computes it "
            "(`samv2_jax.evaluation`), first-frame masks as prompts, every frame of the "
            "held-out videos.",
            "",
            "| | J | F | J&F |",
            "|---|---|---|---|",
            f"| before (random weights) | {before['J']:.3f} | {before['F']:.3f} | "
            f"{before['J&F']:.3f} |",
            *[f"| validation at step {m['step']} | {m['val/J']:.3f} | {m['val/F']:.3f} | "
              f"{m['val/J&F']:.3f} |" for m in vals],
            f"| after {result['step']} steps | {after['J']:.3f} | {after['F']:.3f} | "
            f"{after['J&F']:.3f} |",
            "",
            f"Training loss: {first:.3f} (mean of the first 10 steps) -> {last:.3f} (last 10).",
            f"Wall time: training {t_train / 60:.1f} min including the first step's compile "
            f"and validation; median step {step_s:.2f} s, of which the step waited "
            f"{wait * 1000:.1f} ms for data; one J&F pass {t_eval:.0f} s "
            "(provisional: a shared, loaded 2-core machine).",
            "",
            "![loss curve](finetune_loss.png)",
            "",
        ]
        (RESULTS / "finetune.md").write_text("\n".join(lines))
        print("\n".join(lines))
        if not after["J&F"] > before["J&F"]:
            raise SystemExit("J&F did not rise: that is a bug to find, not a result")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
