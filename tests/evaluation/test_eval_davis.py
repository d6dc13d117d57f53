"""J, F and J&F equal the official DAVIS 2017 evaluation code's numbers.

tests/data/davis_jf_reference.npz holds label maps (moving, vanishing blobs with ragged
predictions, void pixels, empty frames) and the numbers davisvideochallenge/davis2017-evaluation
computed on them; scripts/reference/davis_jf.py regenerates it from a local copy of that code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samv2_jax.evaluation import box_scores, evaluate_video, summarize
from samv2_jax.evaluation.boxes import box_iou_xywh

REF = np.load(Path(__file__).resolve().parents[1] / "data" / "davis_jf_reference.npz")
VIDEOS = sorted({k.split("_")[0] for k in REF.files if k.startswith("v")})


@pytest.mark.parametrize("v", VIDEOS)
def test_per_frame_and_per_object_scores_match_the_davis_code(v):
    res = evaluate_video(REF[f"{v}_gt"], REF[f"{v}_pred"])
    assert len(res) == REF[f"{v}_J"].shape[0]
    for i, k in enumerate(sorted(res)):
        np.testing.assert_allclose(res[k]["J_frames"], REF[f"{v}_J"][i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res[k]["F_frames"], REF[f"{v}_F"][i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res[k]["J"], REF[f"{v}_Jstats"][i], atol=1e-12)
        np.testing.assert_allclose(res[k]["F"], REF[f"{v}_Fstats"][i], atol=1e-12)


def test_global_jf_matches_the_davis_code():
    summary = summarize({v: evaluate_video(REF[f"{v}_gt"], REF[f"{v}_pred"]) for v in VIDEOS})
    np.testing.assert_allclose([summary["J&F"], summary["J"], summary["F"]], REF["global_JF"],
                               atol=1e-12)
    # the reference cases are neither trivial nor perfect
    assert 0.3 < summary["J&F"] < 0.95


def test_box_scores_on_hand_made_tracks():
    gt = np.array([[10, 10, 20, 20]] * 4, float)
    pred = np.array([[10, 10, 20, 20], [20, 10, 20, 20], [40, 40, 5, 5], [12, 10, 20, 20]],
                    float)
    np.testing.assert_allclose(box_iou_xywh(pred, gt), [1, 1 / 3, 0, 360 / 440])
    s = box_scores(pred, gt)
    # IoUs 1, .333, 0, .818: above t for t in 0..1 step .05
    expected = np.mean([np.mean(np.array([1, 1 / 3, 0, 360 / 440]) > t)
                        for t in np.linspace(0, 1, 21)])
    assert s["success_auc"] == pytest.approx(expected)
    assert s["precision"] == pytest.approx(0.75)  # centre errors 0, 10, ~28, 2
    with pytest.raises(ValueError, match="differ"):
        evaluate_video(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
