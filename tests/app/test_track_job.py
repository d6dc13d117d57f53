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
