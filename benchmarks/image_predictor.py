"""Time `set_image` and `predict`: ours against the official SAM 2, same machine, same run.

    python benchmarks/image_predictor.py [--model sam2.1_hiera_tiny] [--image-size 1024]
        [--image ../shared/data/images/cars.jpg] [--repeats 5]

No real checkpoint is needed: both sides run the official architecture with the same
randomly drawn weights (speed does not depend on the values). Writes a markdown table to
benchmarks/results/image_predictor.md (the README links it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# torch's OpenMP threads spin while waiting by default; when anything else shares the two
# cores that spinning slows the official side many times over, so both sides get a fair run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the oracle builder lives with the tests
DEFAULT_IMAGE = HERE.parent.parent / "shared" / "data" / "images" / "cars.jpg"


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    if path.exists():
        return np.asarray(Image.open(path).convert("RGB"))
    print(f"(no {path}; using a synthetic 1200x1800 image)")
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (1200, 1800, 3), dtype=np.uint8)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ours(model_name, image_size, seed=0):
    from samv2_jax import Model
    from samv2_jax.weights.official import convert_state_dict

    import official

    torch_model = official.build_official(model_name, image_size, seed)
    sd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=image_size)
    return torch_model, Model(config=cfg, params=params)


def first_call(args) -> dict:
    """Run in a fresh process: time the first set_image + predict (compile included)."""
    from samv2_jax import SAM2ImagePredictor
    from samv2_jax.app.compilation_cache import enable_compilation_cache

    enable_compilation_cache(args.cache_dir)
    _, model = _ours(args.model, args.image_size)
    image = _load_image(Path(args.image))
    pred = SAM2ImagePredictor(model)
    t = time.perf_counter()
    pred.set_image(image)
    t_set = time.perf_counter() - t
    t = time.perf_counter()
    pred.predict(point_coords=np.array([[image.shape[1] / 2, image.shape[0] / 2]]),
                 point_labels=np.array([1]))
    t_pred = time.perf_counter() - t
    return {"set_image": t_set, "predict": t_pred}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "image_predictor.md"))
    ap.add_argument("--first-call-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.first_call_child:
        print(json.dumps(first_call(args)))
        return

    import torch

    from samv2_jax import SAM2ImagePredictor

    import official

    official.install_torchvision_standin()
    image = _load_image(Path(args.image))
    h, w = image.shape[:2]
    point = dict(point_coords=np.array([[w * 0.5, h * 0.5]]), point_labels=np.array([1]))

    # Compile time, measured in fresh processes: an empty persistent cache, then a warm one.
    with tempfile.TemporaryDirectory() as cache:
        child = [sys.executable, __file__, "--first-call-child", "--model", args.model,
                 "--image-size", str(args.image_size), "--image", args.image,
                 "--cache-dir", cache]
        cold = json.loads(subprocess.run(child, check=True, capture_output=True,
                                         text=True).stdout.strip().splitlines()[-1])
        warm = json.loads(subprocess.run(child, check=True, capture_output=True,
                                         text=True).stdout.strip().splitlines()[-1])

    torch_model, model = _ours(args.model, args.image_size)
    theirs = official.official_image_predictor(torch_model)
    ours = SAM2ImagePredictor(model)

    with torch.inference_mode():
        theirs.set_image(image)  # warm-up
        theirs.predict(**point)
        t_set_theirs = _median_time(lambda: theirs.set_image(image), args.repeats)
        t_pred_theirs = _median_time(lambda: theirs.predict(**point), args.repeats * 4)
    import jax

    ours.set_image(image)
    ours.predict(**point)
    t_set_ours = _median_time(
        lambda: (ours.set_image(image), jax.block_until_ready(ours._features)), args.repeats)
    t_pred_ours = _median_time(lambda: ours.predict(**point), args.repeats * 4)

    # Image encoding alone (preprocessed input in, features out), both sides.
    import jax.numpy as jnp

    from samv2_jax.modeling.image_encoder import encode_image

    x = np.random.default_rng(0).normal(size=(1, args.image_size, args.image_size, 3))
    x = x.astype(np.float32)
    xj, xt = jnp.asarray(x), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    jax.block_until_ready(encode_image(model.params, model.config, xj))
    t_enc_ours = _median_time(
        lambda: jax.block_until_ready(encode_image(model.params, model.config, xj)),
        args.repeats)
    with torch.inference_mode():
        torch_model.forward_image(xt)
        t_enc_theirs = _median_time(lambda: torch_model.forward_image(xt), args.repeats)

    rows = [
        ("image encoding (forward_image)", t_enc_theirs, t_enc_ours),
        ("set_image (preprocess + encode)", t_set_theirs, t_set_ours),
        ("predict (1 point, 3 masks, to original size)", t_pred_theirs, t_pred_ours),
    ]
    lines = [
        f"# Image predictor: ours vs official ({args.model}, image_size {args.image_size}, "
        "float32)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY')}), jax {jax.__version__} "
        f"on {jax.devices()[0].platform}. Image {w}x{h}. Median of {args.repeats} runs "
        f"({args.repeats * 4} for predict), after one warm-up call. Load average at the end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (above 1: other processes shared "
        "the two cores, slowing both sides).",
        "",
        "| step | official (s) | ours (s) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:.4f} | {b:.4f} | {a / b:.2f}x |")
    lines += [
        "",
        "First call of ours in a fresh process (tracing + XLA compilation included):",
        "",
        "| persistent compilation cache | set_image (s) | predict (s) |",
        "|---|---|---|",
        f"| empty | {cold['set_image']:.2f} | {cold['predict']:.2f} |",
        f"| warm (second process) | {warm['set_image']:.2f} | {warm['predict']:.2f} |",
        "",
        f"Command: `python benchmarks/image_predictor.py --model {args.model} --image-size "
        f"{args.image_size} --repeats {args.repeats}`",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
