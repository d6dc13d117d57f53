"""`samv2 eval` end to end on a DAVIS-style folder made here (two videos, palettized label
PNGs, a checkpoint in the official format): the table and results.json hold the J, F and J&F
that `samv2_jax.evaluation` gives on the masks the Python API tracks, for the official policy
and another one; bad input is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samv2_jax.app.cli import main

import official
from conftest import sample_image

NAME, SIZE = "sam2.1_hiera_tiny", 64
H, W, T = 40, 56, 5
# video -> objects as (centre y, centre x, radius, drift per frame in x)
VIDEOS = {"pair": [(14, 16, 7, 2), (26, 40, 8, -2)], "single": [(20, 24, 9, 1)]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_ckpt")
    sd = {k: v.clone() for k, v in official.build_official(NAME, SIZE).state_dict().items()}
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0  # objects present
    pt = folder / f"{NAME}.pt"
    torch.save({"model": sd}, pt)
    assert main(["convert", str(pt), str(folder / "converted")]) == 0
    return folder / "converted"


def _palette_png(labels: np.ndarray, path: Path) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    img.save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    yy, xx = np.mgrid[0:H, 0:W]
    for v, (name, objects) in enumerate(VIDEOS.items()):
        base = sample_image(H + 2 * T, W + 2 * T, seed=v)
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for t in range(T):
            frame = np.ascontiguousarray(base[t:t + H, 2 * t:2 * t + W])
            Image.fromarray(frame).save(root / "JPEGImages" / name / f"{t:05d}.jpg",
                                        quality=95)
            labels = np.zeros((H, W), np.uint8)
            for k, (cy, cx, r, dx) in enumerate(objects, 1):
                labels[(yy - cy) ** 2 + (xx - cx - dx * t) ** 2 <= r * r] = k
            _palette_png(labels, root / "Annotations" / name / f"{t:05d}.png")
    return root


def _expected(model_dir, dataset, policy):
    """Track each video with the Python API and score it with samv2_jax.evaluation."""
    import samv2_jax
    from samv2_jax.evaluation import evaluate_video, summarize

    pred = samv2_jax.SAM2VideoPredictor(samv2_jax.load(model_dir, image_size=SIZE),
                                        policy=policy)
    per_video = {}
    for name in sorted(VIDEOS):
        gt = np.stack([np.asarray(Image.open(p)) for p in
                       sorted((dataset / "Annotations" / name).glob("*.png"))])
        state = pred.init_state(str(dataset / "JPEGImages" / name))
        ids = [int(k) for k in np.unique(gt[0]) if k]
        for k in ids:
            pred.add_new_mask(state, 0, k, gt[0] == k)
        labels = np.zeros_like(gt)
        for f, obj_ids, masks in pred.propagate_in_video(state):
            m = masks[:, 0]
            labels[f] = np.where(m.max(0) > 0, np.asarray(obj_ids)[m.argmax(0)], 0)
        per_video[name] = evaluate_video(gt, labels)
    return per_video, summarize(per_video)


@pytest.mark.parametrize("policy", ["official", "sam3"])
def test_eval_reports_the_scores_of_the_tracked_masks(model_dir, dataset, tmp_path, capsys,
                                                      policy):
    out = tmp_path / "out"
    code = main(["eval", str(dataset), "--memory", policy, "--model", str(model_dir),
                 "--image-size", str(SIZE), "--out", str(out), "-q", "--no-compile-cache"])
    printed = capsys.readouterr().out
    assert code == 0
    per_video, summary = _expected(model_dir, dataset, policy)
    result = json.loads((out / "results.json").read_text())
    assert result["memory"] == policy
    got = result["summary"]
    assert [r["sequence"] for r in got["objects"]] == ["pair_1", "pair_2", "single_1"]
    for key in ("J", "F", "J&F", "J_recall", "F_recall", "J_decay", "F_decay"):
        np.testing.assert_allclose(got[key], summary[key], rtol=0, atol=1e-12)
    for a, b in zip(got["objects"], summary["objects"]):
        for key in ("J", "F", "J&F"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12)
    for name, objects in per_video.items():
        for k, r in objects.items():
            np.testing.assert_allclose(result["videos"][name][str(k)]["J_frames"],
                                       r["J_frames"], atol=1e-12)
            np.testing.assert_allclose(result["videos"][name][str(k)]["F_frames"],
                                       r["F_frames"], atol=1e-12)
    # the tracker found something to score (not all-empty masks)
    assert 0 < summary["J"] <= 1
    # the printed table: one row per object and the mean, to 4 decimals
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]]
            for line in printed.splitlines()[2:]}
    for r in summary["objects"]:
        np.testing.assert_allclose(rows[r["sequence"]], [r["J"], r["F"], r["J&F"]],
                                   atol=5e-5)
    np.testing.assert_allclose(rows["mean"], [summary["J"], summary["F"], summary["J&F"]],
                               atol=5e-5)
    assert (out / "results.txt").read_text().split() == "\n".join(
        printed.splitlines()[1:]).split()


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("samv2: error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_clear_line(model_dir, dataset, tmp_path, capsys):
    model = ["--model", str(model_dir), "--image-size", str(SIZE), "-q", "--no-compile-cache"]
    assert "JPEGImages" in _error(capsys, ["eval", str(tmp_path), *model])
    assert "unknown memory policy 'nope'" in _error(
        capsys, ["eval", str(dataset), "--memory", "nope", *model])
    assert "no such video" in _error(
        capsys, ["eval", str(dataset), "--videos", "pair,absent", *model])
    # a video whose first annotation holds no object
    empty = tmp_path / "empty"
    (empty / "JPEGImages" / "v").mkdir(parents=True)
    (empty / "Annotations" / "v").mkdir(parents=True)
    for t in range(2):
        Image.fromarray(sample_image(H, W)).save(empty / "JPEGImages" / "v" / f"{t:05d}.jpg")
        _palette_png(np.zeros((H, W)), empty / "Annotations" / "v" / f"{t:05d}.png")
    assert "no object" in _error(capsys, ["eval", str(empty), *model])
