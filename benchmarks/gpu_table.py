"""Video tracking on a GPU: frames per second, ours (float32 and bfloat16) against the official
(`vos_optimized=False` and `True`), for the four sizes, in one run.

    python benchmarks/gpu_table.py [--sizes tiny small base_plus large] [--frames 24]
        [--image-size 1024] [--no-vos-optimized]

On a lent GPU machine (no network there), from the repository root, in one command:

    bash benchmarks/gpu/prepare.sh            # here, once: packs what the machine lacks
    # then, with the device tool: carry [".devpkgs"], command:
    PYTHONPATH=$PWD/.devpkgs:$PWD python3 benchmarks/gpu_table.py --out $OUT/gpu_table.md

No checkpoint is needed: the official model with every tensor re-drawn (speed does not
depend on the values), the object-score bias shifted so the object is present. Each side
tracks the same synthetic clip (`samv2 sample`'s scene, 640x480) from one click on frame 0;
the first 4 frames (compilation, warm-up) are left out of the rate. Writes
benchmarks/results/gpu_table.md unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
WARMUP = 4


def _frames(n: int) -> np.ndarray:
    from samv2_jax.app.commands.sample import scene

    return np.stack([scene(t) for t in range(n)])


def _official(size: str, image_size: int, vos: bool):
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    import official  # tests/official.py: config files and the re-drawing

    name = f"sam2.1_hiera_{size}"
    pred = build_sam2_video_predictor(official._CONFIG_FILES[name], None, device="cuda",
                                      vos_optimized=vos,
                                      hydra_overrides_extra=[f"++model.image_size={image_size}"])
    official.randomize_(pred, 0)
    with torch.no_grad():
        pred.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 3.0
    return pred


def _time_official(pred, frames: np.ndarray, folder: Path) -> list[float]:
    import torch
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.jpg", quality=95)
    h, w = frames.shape[1:3]
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        state = pred.init_state(str(folder))
        pred.add_new_points_or_box(state, 0, 1, points=[[w // 2, h // 2]], labels=[1])
        stamps = []
        for _ in pred.propagate_in_video(state):
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())
    return stamps


def _time_ours(pred_official, frames: np.ndarray, image_size: int, dtype: str) -> list[float]:
    import jax
    import jax.numpy as jnp

    from samv2_jax import Model, SAM2VideoPredictor
    from samv2_jax.weights.official import convert_state_dict

    sd = {k: v.detach().float().cpu().numpy() for k, v in pred_official.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=image_size)
    if dtype == "bfloat16":
        params = jax.tree.map(lambda x: x.astype(jnp.bfloat16)
                              if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    pred = SAM2VideoPredictor(Model(cfg, jax.device_put(params)))
    h, w = frames.shape[1:3]
    state = pred.init_state(frames)
    pred.add_new_points_or_box(state, 0, 1, points=[[w // 2, h // 2]], labels=[1])
    stamps = []
    for _ in pred.propagate_in_video(state):  # masks come back as numpy: synced
        stamps.append(time.perf_counter())
    return stamps


def _fps(stamps: list[float]) -> float:
    steady = np.diff(stamps[WARMUP:])
    return 1.0 / statistics.median(steady)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small", "base_plus", "large"])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--no-vos-optimized", action="store_true",
                    help="skip the official's torch.compile variant (minutes of compiling)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_table.md")
    args = ap.parse_args(argv)
    import jax
    import torch

    frames = _frames(args.frames)
    rows = []
    for size in args.sizes:
        row = {"size": size}
        pred = _official(size, args.image_size, vos=False)
        row["official"] = _fps(_time_official(pred, frames, Path("/tmp/gpu_table_frames")))
        row["ours float32"] = _fps(_time_ours(pred, frames, args.image_size, "float32"))
        row["ours bfloat16"] = _fps(_time_ours(pred, frames, args.image_size, "bfloat16"))
        del pred
        if not args.no_vos_optimized:
            pred = _official(size, args.image_size, vos=True)
            row["official vos_optimized"] = _fps(_time_official(pred, frames,
                                                                Path("/tmp/gpu_table_frames")))
            del pred
        torch.cuda.empty_cache()
        rows.append(row)
        print(row, flush=True)
    cols = ["official", "official vos_optimized", "ours float32", "ours bfloat16"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["# Video tracking on a GPU: frames per second", "",
             f"{torch.cuda.get_device_name()}, jax {jax.__version__}, torch "
             f"{torch.__version__}; sam2.1 models at {args.image_size}, one object, "
             f"{args.frames} frames of a 640x480 clip, the first {WARMUP} left out (median "
             "frame time). The official runs under bfloat16 autocast, as its notebooks do.",
             "", "| model | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| sam2.1 {r['size']} | "
                     + " | ".join(f"{r[c]:.1f}" if c in r else "" for c in cols) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
