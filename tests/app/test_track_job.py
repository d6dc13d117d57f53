"""The reader/writer threads beside the tracking loop of `samv2 track`."""

import os
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from samv2_jax.app import track_job
from samv2_jax.io.outputs import read_label_png

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread priorities are a Linux feature")


def _nice_of_thread(fn):
    seen = {}

    def run():
        fn()
        seen["own"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(target=lambda: seen.setdefault(
            "child", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        child.start()
        child.join()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return seen


@linux_only
def test_background_threads_run_at_lower_priority_without_touching_the_process():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = _nice_of_thread(track_job._background_priority)
    assert seen["own"] == min(19, before + track_job._BACKGROUND_NICE)
    assert seen["child"] == seen["own"]  # codec threads started there inherit it
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def _info(h=24, w=32):
    return SimpleNamespace(width=w, height=h)


@linux_only
def test_writer_opens_outputs_on_its_low_priority_thread(tmp_path):
    paths = track_job.OutputPaths(masks_dir=tmp_path / "masks", overlay=tmp_path / "o.mp4",
                                  json=tmp_path / "r.json")
    w = track_job._Writer(paths, _info(), {}, 10.0)
    nice = os.getpriority(os.PRIO_PROCESS, w._thread.native_id)
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + track_job._BACKGROUND_NICE)
    logits = np.full((1, 1, 24, 32), -5.0, np.float32)
    logits[0, 0, 4:10, 6:12] = 5.0
    w.put((0, np.zeros((24, 32, 3), np.uint8), [3], logits, np.array([1.0])))
    w.finish({"complete": True})
    assert w.done == 1
    labels = read_label_png(tmp_path / "masks" / "00000.png")
    assert (labels == 3).sum() == 36 and set(np.unique(labels)) == {0, 3}
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_writer_that_cannot_open_an_output_raises_at_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    paths = track_job.OutputPaths(masks_dir=tmp_path / "masks",
                                  overlay=blocker / "sub" / "o.mp4")
    with pytest.raises(OSError):
        track_job._Writer(paths, _info(), {}, 10.0)
    assert not any(t.name == "samv2-writer" and t.is_alive() for t in threading.enumerate())


def _two_overlapping_objects(h=24, w=32):
    logits = np.full((2, 1, h, w), -5.0, np.float32)
    logits[0, 0, 2:14, 2:20] = 3.0
    logits[1, 0, 8:20, 10:30] = 4.0  # overlaps object 0 on rows 8..13, columns 10..19
    return logits


def test_json_and_pngs_give_overlapping_pixels_to_the_same_object(tmp_path):
    import json

    from samv2_jax.io.outputs import rle_decode

    paths = track_job.OutputPaths(masks_dir=tmp_path / "masks", json=tmp_path / "r.json")
    w = track_job._Writer(paths, _info(), {}, 10.0)
    logits = _two_overlapping_objects()
    w.put((0, np.zeros((24, 32, 3), np.uint8), [1, 7], logits, np.array([1.0, 2.0])))
    w.finish({"complete": True})
    labels = read_label_png(tmp_path / "masks" / "00000.png")
    assert (labels[8:14, 10:20] == 7).all()  # the higher logit wins the overlap
    objects = json.loads((tmp_path / "r.json").read_text())["frames"][0]["objects"]
    for obj in objects:
        mask = rle_decode(obj["rle"])
        np.testing.assert_array_equal(mask, labels == obj["obj_id"])
        assert obj["area"] == int(mask.sum())
    masks = [rle_decode(o["rle"]) for o in objects]
    assert not (masks[0] & masks[1]).any()


def test_a_full_disk_leaves_the_same_frames_in_every_output(tmp_path, monkeypatch):
    """The JSON write of the third frame fails: that frame's PNG and overlay frame are taken
    back, so all three outputs hold frames 0 and 1."""
    import errno
    import json

    import av

    from samv2_jax.io import outputs

    paths = track_job.OutputPaths(masks_dir=tmp_path / "masks", overlay=tmp_path / "o.mp4",
                                  json=tmp_path / "r.json")
    real_add = outputs.ResultsJsonWriter.add_frame

    def add_frame(self, frame_idx, objects):
        if frame_idx == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_add(self, frame_idx, objects)

    monkeypatch.setattr(outputs.ResultsJsonWriter, "add_frame", add_frame)
    w = track_job._Writer(paths, _info(), {}, 10.0)
    logits = _two_overlapping_objects()
    try:  # put() raises once the writer has failed; it may not have yet
        for t in range(5):
            w.put((t, np.full((24, 32, 3), 40 * t, np.uint8), [1, 2], logits,
                   np.array([1.0, 1.0])))
    except OSError as e:
        assert "No space" in str(e)
    with pytest.raises(OSError, match="No space"):
        w.finish({"complete": False})
    assert w.done == 2
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == ["00000.png",
                                                                           "00001.png"]
    assert [f["frame_idx"] for f in json.loads((tmp_path / "r.json").read_text())["frames"]] \
        == [0, 1]
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert len([f for f in c.decode(video=0)]) == 2
