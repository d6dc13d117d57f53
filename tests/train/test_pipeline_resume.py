"""`samv2 train` end to end on a small DAVIS-style dataset: a run killed with SIGKILL resumes
with the same command and its losses equal an uninterrupted run's bit for bit; no checkpoint
on disk is ever half written; the output folder is a model (`samv2_jax.load`, `samv2 segment
--model OUT`, `samv2 track --model OUT`) and `samv2 export` writes an official `.pt` that the
official `build_sam2` loads strictly and that gives our masks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from samv2_jax.train.data import synthetic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_step_script import train_args  # noqa: E402

STEPS, SAVE_EVERY, SIZE = 8, 2, 64
PARTS = ("params", "opt", "data", "_CHECKPOINT_METADATA")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    return synthetic.make_davis_like(root, num_videos=3, num_frames=5, height=48, width=64,
                                     num_objects=2, seed=0, val_videos=1)


def _command(dataset, out):
    # the cheapest step of the real objective to compile (see pipeline_step_script.py)
    return [sys.executable, "-m", "samv2_jax.app.cli", "train",
            "--data", f"davis:{dataset},split=train", *train_args(),
            "--save-every", str(SAVE_EVERY), "--keep", "2", "--num-workers", "0",
            "--out", str(out), "-q"]


def _env():
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _checkpoint_problems(out) -> list[str]:
    """Visible step folders that lack a part (a half-written checkpoint)."""
    ckpts = Path(out) / "checkpoints"
    bad = []
    if ckpts.is_dir():
        for d in ckpts.iterdir():
            if d.name.isdigit():
                missing = [p for p in PARTS if not (d / p).exists()]
                if missing:
                    bad.append(f"{d.name} lacks {missing}")
    return bad


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "uninterrupted"
    res = subprocess.run(_command(dataset, out), capture_output=True, text=True, env=_env(),
                         timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"trained to step {STEPS}" in res.stdout
    return out


def test_killed_run_resumes_with_identical_losses(dataset, reference, tmp_path):
    want = _losses(reference)
    assert sorted(want) == list(range(1, STEPS + 1))
    assert len(set(want.values())) == STEPS  # the losses change from step to step
    out = tmp_path / "killed"
    # SIGTERM (as Ctrl-C): the run finishes its step, writes a checkpoint and stops
    proc = subprocess.Popen(_command(dataset, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.time() + 1500
        while time.time() < deadline and proc.poll() is None and not (
                (out / "metrics.jsonl").is_file() and _losses(out)):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, 143), err[-2000:]
    stopped_at = max(_losses(out))
    assert stopped_at < STEPS and f"checkpoint {stopped_at} written" in err
    assert (out / "checkpoints" / str(stopped_at) / "params").is_dir()
    # the same command again, killed with SIGKILL while it writes a later checkpoint
    proc = subprocess.Popen(_command(dataset, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    seen_problems, killed_during_save = [], False
    deadline = time.time() + 1500
    try:
        while proc.poll() is None and time.time() < deadline:
            seen_problems += _checkpoint_problems(out)
            ckpts = out / "checkpoints"
            steps_done = [int(d.name) for d in ckpts.iterdir() if d.name.isdigit()] \
                if ckpts.is_dir() else []
            writing = ckpts.is_dir() and any("tmp" in d.name for d in ckpts.iterdir())
            if steps_done and writing and max(steps_done) > stopped_at:  # writing a later one
                killed_during_save = True
                break
            if steps_done and max(steps_done) >= 2 * SAVE_EVERY:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert seen_problems == [] and _checkpoint_problems(out) == []
    partial = _losses(out)
    assert partial and max(partial) < STEPS  # killed mid-way
    # the same command again: resumes from the last complete checkpoint
    res = subprocess.run(_command(dataset, out), capture_output=True, text=True, env=_env(),
                         timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed_at = int(res.stderr.split("(step ")[1].split(")")[0])
    assert resumed_at in range(1, STEPS) and resumed_at > stopped_at - 1
    got = _losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert got[step] == want[step], (step, got[step], want[step])  # bit for bit
    assert _checkpoint_problems(out) == []
    kept = sorted(int(d.name) for d in (out / "checkpoints").iterdir() if d.name.isdigit())
    assert kept == [STEPS - SAVE_EVERY, STEPS]  # keep 2
    print(f"killed {'while writing a checkpoint' if killed_during_save else 'between saves'}; "
          f"resumed at step {resumed_at}")


def test_output_folder_is_a_model_for_load_segment_and_track(reference, dataset, tmp_path):
    import samv2_jax
    from samv2_jax.app.cli import main

    model = samv2_jax.load(reference)
    older = samv2_jax.load(reference / "checkpoints" / str(STEPS - SAVE_EVERY))
    assert model.config.image_size == SIZE and model.config.name == "sam2.1_hiera_tiny"
    leaf = model.params["sam_mask_decoder"]["iou_token"]["weight"]
    assert not np.array_equal(np.asarray(leaf),
                              np.asarray(older.params["sam_mask_decoder"]["iou_token"]["weight"]))
    image = dataset / "JPEGImages" / "video000" / "00000.jpg"
    mask_png = tmp_path / "seg" / "mask.png"
    assert main(["segment", str(image), "--point", "30,20", "--model", str(reference),
                 "--out", str(mask_png), "--no-overlay", "-q"]) == 0
    assert mask_png.is_file()
    track_out = tmp_path / "track"
    first = dataset / "Annotations" / "video000" / "00000.png"
    assert main(["track", str(dataset / "JPEGImages" / "video000"), "--mask", f"0:{first}",
                 "--model", str(reference), "--out", str(track_out), "-q"]) == 0
    assert len(list((track_out).rglob("*.png"))) >= 5
    # the loop's validation: J&F of the held-out video through samv2_jax.evaluation
    from samv2_jax.evaluation import evaluate_video
    from samv2_jax.train.data.pipeline import eval_clips
    from samv2_jax.train.loop import _labels, evaluate_videos

    videos = list(eval_clips(f"davis:{dataset},split=val", SIZE, max_frames=4))
    assert [v[0] for v in videos] == ["video002"] and videos[0][1].shape == (4, 48, 64, 3)
    scores = evaluate_videos(model.config, model.params, videos, prefix="val/")
    assert set(scores) == {"val/J", "val/F", "val/J&F"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    gt = _labels(videos[0][2])
    perfect = evaluate_video(gt, gt)
    assert all(r["J"][0] == 1.0 and r["F"][0] == 1.0 for r in perfect.values())


def test_export_loads_into_official_build_sam2_strictly_with_our_masks(reference, tmp_path):
    import torch

    import samv2_jax
    from samv2_jax.app.cli import main
    from samv2_jax.predictors.image import SAM2ImagePredictor
    from samv2_jax.weights.layout import to_official
    from samv2_jax.weights.official import read_state_dict

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import official

    pt = tmp_path / "finetuned.pt"
    assert main(["export", str(reference), str(pt)]) == 0
    model = samv2_jax.load(reference)
    stored = read_state_dict(pt)
    ours = to_official(model.params)
    assert set(stored) == set(ours)
    for k in ours:
        np.testing.assert_array_equal(stored[k], ours[k])
    from sam2.build_sam import build_sam2

    # strict: build_sam2 raises on any missing or unexpected key
    torch_model = build_sam2(official._CONFIG_FILES["sam2.1_hiera_tiny"], str(pt), device="cpu",
                             mode="eval", hydra_overrides_extra=[f"++model.image_size={SIZE}"])
    missing, unexpected = torch_model.load_state_dict(torch.load(pt)["model"], strict=True)
    assert not missing and not unexpected
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    box = np.asarray([8, 6, 40, 36], np.float32)
    theirs = official.official_image_predictor(torch_model)
    theirs.set_image(image)
    t_masks, t_scores, t_logits = theirs.predict(box=box, multimask_output=False,
                                                 return_logits=True)
    pred = SAM2ImagePredictor(model)
    pred.set_image(image)
    o_masks, o_scores, o_logits = pred.predict(box=box, multimask_output=False,
                                               return_logits=True)
    assert official.rel_err(o_logits, t_logits) < 1e-4
    assert official.rel_err(o_scores, t_scores) < 1e-4
    agree = np.mean((np.asarray(o_masks) > 0) == (np.asarray(t_masks) > 0))
    assert agree > 0.999
    from samv2_jax.weights.export import export_official

    with pytest.raises(FileExistsError, match="overwrite"):
        export_official(model, pt)


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(dataset, tmp_path, monkeypatch):
    """The loop's guard, with the objective replaced by one that is not finite from step 2
    on (the real objective rarely is; what matters here is what the loop does)."""
    import jax.numpy as jnp

    import samv2_jax.train.loss as loss_module
    from samv2_jax.train.loop import RunConfig, TrainingStopped, run

    def loss_fn(params, batch, key, *, model_cfg, train_cfg):
        w = params["sam_mask_decoder"]["iou_token"]["weight"]
        value = jnp.mean((w - batch["images"].mean()) ** 2)
        bad = jnp.sum(batch["masks"]) >= 0  # always true, but not known at trace time
        return jnp.where(bad, jnp.nan, value), {}

    monkeypatch.setattr(loss_module, "loss_fn", loss_fn)
    config = RunConfig(model="sam2.1_hiera_tiny", init="random", image_size=SIZE,
                       data=(f"davis:{dataset},split=train",), steps=10, num_frames=1,
                       recipe="decoder_only", save_every=100, max_nonfinite_steps=3,
                       out=str(tmp_path / "nan"), num_workers=0, progress=False)
    with pytest.raises(TrainingStopped, match=r"3 steps in a row had a non-finite loss"):
        run(config)
    rows = [json.loads(x) for x in (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_in_a_row"] for r in rows] == [1, 2, 3]
    assert [r["nonfinite_total"] for r in rows] == [1, 2, 3]
    assert all(np.isnan(r["loss"]) for r in rows)
