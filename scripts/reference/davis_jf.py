"""Reference J / F / J&F numbers from the official DAVIS 2017 evaluation code, for
tests/evaluation/test_eval_davis.py.

Usage: python scripts/reference/davis_jf.py /path/to/davis2017-evaluation [out.npz]

The path is a local copy of davisvideochallenge/davis2017-evaluation (it needs opencv and
scikit-image). The script draws label maps (ground truth and predictions: blobs that move,
grow, vanish and come back, noisy edges, void pixels, empty frames), runs the official
`db_eval_iou`, `db_eval_boundary` and `db_statistics` on them the way its semi-supervised
`evaluate` does (first and last frames left out, void as background), and stores masks and
numbers in tests/data/davis_jf_reference.npz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def make_video(rng, t: int, h: int, w: int, objects: int, noise: float):
    """(ground truth, prediction) label maps [T, H, W] uint8."""
    yy, xx = np.mgrid[0:h, 0:w]
    gt = np.zeros((t, h, w), np.uint8)
    pred = np.zeros((t, h, w), np.uint8)
    for k in range(1, objects + 1):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        vy, vx = rng.normal(0, 2, 2)
        r = rng.uniform(0.1, 0.25) * min(h, w)
        gone = rng.integers(2, t - 1)
        for f in range(t):
            y, x = cy + vy * f, cx + vx * f
            blob = (yy - y) ** 2 / (r * 1.2) ** 2 + (xx - x) ** 2 / r ** 2 <= 1
            if f == gone:  # the object leaves this frame
                blob[:] = False
            gt[f][blob] = k
            jitter = rng.normal(0, noise, 2) * r
            shape = ((yy - y - jitter[0]) ** 2 / (r * rng.uniform(0.9, 1.3)) ** 2
                     + (xx - x - jitter[1]) ** 2 / r ** 2) <= 1
            if rng.uniform() < 0.15:
                shape[:] = False  # a missed frame
            shape &= rng.uniform(size=shape.shape) > 0.03  # ragged edges and holes
            pred[f][shape] = k
    # void pixels (255) along one object's edge in the ground truth
    edge = (gt[:, :, 1:] != gt[:, :, :-1])
    gt[:, :, 1:][edge & (rng.uniform(size=edge.shape) < 0.3)] = 255
    return gt, pred


def main():
    ref = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else (
        Path(__file__).resolve().parents[2] / "tests/data/davis_jf_reference.npz")
    sys.path.insert(0, str(ref))
    from davis2017 import metrics, utils

    rng = np.random.default_rng(2017)
    arrays = {}
    cases = [(10, 48, 64, 2, 0.05), (9, 40, 72, 3, 0.15), (12, 56, 56, 1, 0.3)]
    for v, (t, h, w, objects, noise) in enumerate(cases):
        gt, pred = make_video(rng, t, h, w, objects, noise)
        arrays[f"v{v}_gt"], arrays[f"v{v}_pred"] = gt, pred
        # as DAVIS.get_all_masks / Results.read_masks and evaluate(semi-supervised) do
        g = gt.astype(np.float64)
        g[g == 255] = 0
        n = int(g[0].max())
        gm = np.stack([g == k for k in range(1, n + 1)])[:, 1:-1]
        pm = np.stack([pred == k for k in range(1, n + 1)])[:, 1:-1]
        j = np.zeros(gm.shape[:2])
        f = np.zeros(gm.shape[:2])
        for i in range(n):
            j[i] = metrics.db_eval_iou(gm[i], pm[i], None)
            f[i] = metrics.db_eval_boundary(gm[i], pm[i], None)
        arrays[f"v{v}_J"], arrays[f"v{v}_F"] = j, f
        arrays[f"v{v}_Jstats"] = np.array([utils.db_statistics(x) for x in j])
        arrays[f"v{v}_Fstats"] = np.array([utils.db_statistics(x) for x in f])
    jm = np.concatenate([arrays[f"v{v}_Jstats"][:, 0] for v in range(len(cases))])
    fm = np.concatenate([arrays[f"v{v}_Fstats"][:, 0] for v in range(len(cases))])
    arrays["global_JF"] = np.array([(jm.mean() + fm.mean()) / 2, jm.mean(), fm.mean()])
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: J&F {arrays['global_JF'][0]:.6f}")


if __name__ == "__main__":
    main()
