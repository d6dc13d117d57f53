"""Bad input to the video predictor: a clear error naming what was wrong, never a stack trace
from deep inside jax; and inputs a user expects to work (masks of any size) do."""

from __future__ import annotations

import os

import numpy as np
import pytest

import official
import video_scripts as vs
from video_scripts import PRESENT, ours_for

H, W = 64, 80


@pytest.fixture(scope="module")
def predictor():
    theirs = official.official_video_predictor("sam2.1_hiera_tiny", 256, fill_hole_area=0,
                                               obj_score_shift=PRESENT)
    return ours_for(theirs)


@pytest.fixture
def state(predictor):
    return predictor.init_state(vs.make_frames(4, H, W))


def test_frame_index_outside_the_video(predictor, state):
    with pytest.raises(IndexError, match=r"frame_idx 4 is outside the video \(frames 0..3\)"):
        predictor.add_new_points_or_box(state, 4, 1, points=[[1, 2]], labels=[1])
    with pytest.raises(IndexError, match="outside the video"):
        predictor.add_new_mask(state, -1, 1, np.ones((H, W), bool))
    predictor.add_new_points_or_box(state, 0, 1, points=[[10, 20]], labels=[1])
    with pytest.raises(IndexError, match="outside the video"):
        next(predictor.propagate_in_video(state, start_frame_idx=9))
    with pytest.raises(TypeError, match="integer"):
        predictor.add_new_points_or_box(state, 1.5, 1, points=[[1, 2]], labels=[1])


def test_bad_points_labels_and_boxes(predictor, state):
    with pytest.raises(ValueError, match="labels must have shape"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 2], [3, 4]], labels=[1])
    with pytest.raises(ValueError, match="together"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 2]])
    with pytest.raises(ValueError, match="at least one of points or box"):
        predictor.add_new_points_or_box(state, 0, 1)
    with pytest.raises(ValueError, match="point labels must be"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 2]], labels=[5])
    with pytest.raises(ValueError, match=r"points must have shape \[N, 2\]"):
        predictor.add_new_points_or_box(state, 0, 1, points=[1, 2, 3], labels=[1])
    with pytest.raises(ValueError, match="box must be 4 numbers"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 2, 3])
    with pytest.raises(ValueError, match="without clearing old points"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 2, 3, 4], clear_old_points=False)
    with pytest.raises(ValueError, match="finite"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[np.nan, 2]], labels=[1])
    # None of the failures above created an object.
    assert state["obj_ids"] == []


def test_masks_of_any_size_are_resized(predictor, state):
    mask = vs.disk_mask(H, W, H / 2, W / 2, H / 4)
    _, ids, at_video = predictor.add_new_mask(state, 0, 1, mask)
    big = np.kron(mask, np.ones((3, 3), bool))
    _, _, from_big = predictor.add_new_mask(state, 0, 1, big)
    assert ids == [1] and at_video.shape == from_big.shape == (1, 1, H, W)
    assert vs.mask_iou(at_video[0], from_big[0]) > 0.95
    with pytest.raises(ValueError, match="mask must be 2-D"):
        predictor.add_new_mask(state, 0, 1, np.ones((2, H, W), bool))


def test_unknown_objects_and_missing_prompts(predictor, state):
    with pytest.raises(RuntimeError, match="no points, box or mask"):
        next(predictor.propagate_in_video(state))
    predictor.add_new_points_or_box(state, 0, 1, points=[[10, 20]], labels=[1])
    with pytest.raises(KeyError, match="unknown object id 5"):
        predictor.clear_all_prompts_in_frame(state, 0, 5)
    with pytest.raises(RuntimeError, match="does not exist"):
        predictor.remove_object(state, 5, strict=True)
    assert predictor.remove_object(state, 5) == ([1], [])
    # An object whose only prompt was cleared cannot be tracked.
    predictor.add_new_points_or_box(state, 1, 2, points=[[10, 20]], labels=[1])
    predictor.clear_all_prompts_in_frame(state, 1, 2)
    with pytest.raises(RuntimeError, match="no prompts for object id 2"):
        next(predictor.propagate_in_video(state))


def test_videos_that_cannot_be_read(predictor, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .jpg/.jpeg/.png frames"):
        predictor.init_state(str(empty))
    bad = tmp_path / "x.mp4"
    bad.write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match="could not open"):
        predictor.init_state(str(bad))
    with pytest.raises(FileNotFoundError):
        predictor.init_state(str(tmp_path / "missing.mp4"))
