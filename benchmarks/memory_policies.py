"""Per-frame time of each memory policy against the official policy on the same frames, and
SAM2Long's cost: its pathways against one, split into the image encoding (once per frame)
and the memory-conditioned decodes (one per pathway).

Usage: python benchmarks/memory_policies.py [--model sam2.1_hiera_tiny] [--size 512]
       [--frames 12] [--objects 1] [--rounds 3]

Weights are re-drawn at random (tests/official.py), frames are a window sliding over
scikit-image's astronaut; every policy runs the same frames in alternating rounds (this host
is noisy) and the median per-frame time after compiling is reported. The reference SAM2Long
implementation's own per-frame time against ours is measured by
benchmarks/sam2long_reference.py.
Writes benchmarks/results/memory_policies.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

POLICIES = ("official", "samurai", "dam4sam", "sam3", "sam2long")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--objects", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/memory_policies.md"))
    args = ap.parse_args()

    from samv2_jax.io.frames import preprocess_frame
    from samv2_jax.modeling.image_encoder import encode_image
    from samv2_jax.tracking.bank import empty_bank, write
    from samv2_jax.tracking.policies import policy_by_name
    from samv2_jax.tracking.step import track_step
    from samv2_jax.weights.official import convert_state_dict

    import official
    import video_scripts as vs

    official.install_torchvision_standin()
    sd = official.official_state_dict(args.model, args.size)
    cfg, params = convert_state_dict(sd, image_size=args.size)
    head = params["sam_mask_decoder"]["pred_obj_score_head"]["layers"]["2"]
    head["bias"] = head["bias"] + vs.PRESENT
    frames = vs.make_frames(args.frames, 300, 420)
    images = [jnp.asarray(preprocess_frame(f, args.size))[None] for f in frames]
    enc = jax.jit(lambda im: encode_image(params, cfg, im))
    feats = [enc(im) for im in images]
    e, d = cfg.embedding_size, cfg.memory.mem_dim
    rng = np.random.default_rng(0)

    def run(name):
        policy = policy_by_name(name)
        bank = empty_bank(cfg, args.objects, args.frames, policy=policy)
        r = bank.num_rows
        bank = write(bank, 0, rng.normal(size=(r, e, e, d)), rng.normal(size=(r, 256)), 0,
                     True, np.full(r, 10.0), area=np.full(r, 100.0))
        times = []
        for f in range(1, args.frames):
            t = time.perf_counter()
            out, bank = track_step(params, cfg, bank, feats[f], f, jnp.full(
                (args.objects,), f), max_cond=4, num_frames=args.frames, policy=policy)
            jax.block_until_ready(out["pred_masks"])
            times.append(time.perf_counter() - t)
        return times[2:]  # the first frames compile

    per = {n: [] for n in POLICIES}
    for _ in range(args.rounds):
        for n in POLICIES:
            per[n].extend(run(n))
    med = {n: statistics.median(v) for n, v in per.items()}

    # SAM2Long's cost. The per-frame times above are the memory-conditioned step alone (the
    # features are encoded beforehand): one decode for the official policy (memory attention,
    # decoder, memory encoding of the chosen mask), all pathways batched for SAM2Long. The
    # goal: a SAM2Long frame costs at most one image encoding plus three such decodes.
    enc_times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(enc(images[3]))
        enc_times.append(time.perf_counter() - t)
    t_enc = statistics.median(enc_times)
    one, three = med["official"], med["sam2long"]
    budget = t_enc + 3 * one
    lines = [f"# Memory policies: per-frame time ({args.model} at {args.size}, "
             f"{args.objects} object(s), {args.frames} frames, {args.rounds} alternating "
             "rounds, median after compiling)", "",
             "Provisional: measured on a shared 2-core CPU host; rerun on a quiet machine.", "",
             "| policy | s / frame | vs official |", "| --- | ---: | ---: |"]
    for n in POLICIES:
        lines.append(f"| {n} | {med[n]:.4f} | {med[n] / med['official']:.3f} |")
    lines += ["", "SAM2Long's three pathways against one decode (per frame):", "",
              "| part | s |", "| --- | ---: |",
              f"| image encoding, once per frame (E) | {t_enc:.4f} |",
              f"| one memory-conditioned decode: the official step (D) | {one:.4f} |",
              f"| SAM2Long step, 3 pathways batched | {three:.4f} ({three / one:.2f} D) |",
              f"| SAM2Long frame: E + its step | {t_enc + three:.4f} |",
              f"| goal: E + 3 D | {budget:.4f} |",
              f"| SAM2Long frame / goal | {(t_enc + three) / budget:.2f} "
              f"({'met' if t_enc + three <= budget else 'not met'}) |", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
