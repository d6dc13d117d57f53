"""The work behind `samv2 track`: a reader, the tracking loop and a writer, side by side.

The reader thread decodes and preprocesses frames ahead; the main thread only tracks; the
writer thread turns each result into the requested outputs. JAX, PyAV, Pillow and zlib release
the GIL in their heavy parts, so the three overlap and the command runs at about the tracker's
own speed. Queues are short, so memory stays flat however long the video is.

Every output is complete after each frame (PNGs are renamed into place, the overlay video is
fragmented per frame, the JSON document is closed after every frame), so an interrupted run
leaves every finished frame readable; `TrackReport.stopped` says why a run ended early.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samv2_jax.app.options import raise_pending
from samv2_jax.app.prompt_files import PromptSet
from samv2_jax.io.frames import VideoReader, preprocess_frame
from samv2_jax.predictors.streaming import StreamingTracker

_END = object()
# How much nicer than the tracker the reader and writer threads run. XLA splits each operation
# across every core and waits for the slowest part, so a core taken by PNG or video encoding at
# the wrong moment stalls the tracker; at a lower priority that work runs in the gaps it leaves.
_BACKGROUND_NICE = 10


def _background_priority() -> None:
    """Lower the calling thread's CPU priority (and that of threads it starts afterwards).

    Linux only: there a thread id names just that thread; elsewhere the same call would
    change the whole process, so nothing is done.
    """
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(19, os.getpriority(os.PRIO_PROCESS, tid) + _BACKGROUND_NICE))
        except OSError:
            pass


@dataclass(frozen=True)
class OutputPaths:
    masks_dir: Path | None = None   # one DAVIS-style palettized PNG per frame
    overlay: Path | None = None     # the video with every object tinted in its colour
    json: Path | None = None        # per frame and object: box, area, score, COCO RLE

    def existing(self) -> list[Path]:
        found = [p for p in (self.overlay, self.json) if p is not None and p.exists()]
        if self.masks_dir is not None and self.masks_dir.is_dir() and any(
                self.masks_dir.glob("*.png")):
            found.append(self.masks_dir)
        return found


@dataclass
class TrackReport:
    frames: int = 0                  # frames tracked and written
    seconds: float = 0.0             # wall time of the whole loop
    steady_fps: float | None = None  # frames per second after the first two (compilation)
    stopped: str | None = None       # None when the source ended normally


class _Writer:
    """Turns tracking results into output files, on its own thread."""

    def __init__(self, paths: OutputPaths, info, header: dict, fps: float):
        self.paths = paths
        self.pngs = self.video = self.json = None
        self.done = 0          # frames fully written
        self.error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=4)
        # The outputs are opened on the writer thread, so the encoder's own threads inherit
        # its lower priority; a failure to open them is raised here.
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(info, header, fps, ready),
                                        name="samv2-writer", daemon=True)
        self._thread.start()
        ready.wait()
        if self.error is not None:
            self._thread.join()
            raise self.error

    def _open(self, info, header: dict, fps: float) -> None:
        from samv2_jax.io import outputs

        self._o = outputs
        paths = self.paths
        if paths.masks_dir:
            self.pngs = outputs.LabelPngWriter(paths.masks_dir)
        if paths.overlay:
            self.video = outputs.OverlayVideoWriter(paths.overlay, info.width, info.height, fps)
        if paths.json:
            self.json = outputs.ResultsJsonWriter(paths.json, header)

    def put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _close_files(self) -> list[Exception]:
        """Close the PNG and video outputs that are open; returns what failed."""
        errors = []
        for closer in (self.pngs, self.video):
            if closer is not None:
                try:
                    closer.close()
                except Exception as e:
                    errors.append(e)
        return errors

    def _run(self, info, header: dict, fps: float, ready: threading.Event) -> None:
        _background_priority()
        try:
            self._open(info, header, fps)
        except BaseException as e:
            self.error = e
            self._close_files()  # what did open (the JSON opens last); the open error counts
            return
        finally:
            ready.set()
        while True:
            item = self._q.get()
            if item is _END:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                self._write(*item)
                self.done += 1
            except BaseException as e:  # reported to the main thread by put()/finish()
                self.error = e

    def _write(self, frame_idx: int, rgb: np.ndarray, obj_ids: list, logits: np.ndarray,
               scores: np.ndarray) -> None:
        """One frame into every output, or into none: a step that fails (a full disk) undoes
        the steps before it, so the PNGs, the overlay and the JSON always hold the same
        frames."""
        o = self._o
        masks = logits[:, 0] > 0 if len(obj_ids) else np.zeros((0, *rgb.shape[:2]), bool)
        labels = o.label_map(masks, obj_ids, logits[:, 0] if len(obj_ids) else None)
        undo = []
        try:
            if self.pngs is not None:
                self.pngs.write(frame_idx, labels)
                undo.append(lambda: self.pngs.remove(frame_idx))
            if self.video is not None:
                self.video.write(o.overlay(rgb, labels))
                undo.append(self.video.drop_last)
            if self.json is not None:
                # Each object's pixels of the label map: the JSON and the PNGs agree where
                # objects overlap (the pixel goes to the object with the higher logit).
                self.json.add_frame(frame_idx, [o.object_record(int(i), labels == i, float(s))
                                                for i, s in zip(obj_ids, scores)])
        except BaseException:
            for step in reversed(undo):
                with contextlib.suppress(OSError):
                    step()
            raise

    def finish(self, status: dict) -> None:
        """Write what is queued, then close every output (marking the JSON with `status`)."""
        self._q.put(_END)
        self._thread.join()
        errors = [self.error] if self.error is not None else []
        errors += self._close_files()
        if self.json is not None:
            try:
                self.json.close(status)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


def _reader(reader: VideoReader, image_size: int, out: queue.Queue, stop: threading.Event,
            max_frames: int | None):
    """Decode and preprocess frames ahead of the tracker."""
    _background_priority()
    try:
        for idx, rgb in enumerate(reader):
            if max_frames is not None and idx >= max_frames:
                break
            item = (idx, rgb, preprocess_frame(rgb, image_size))
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(_END)
    except BaseException as e:  # handed to the main thread
        out.put(e)
    finally:
        reader.close()


def track_video(tracker: StreamingTracker, reader: VideoReader, prompts: PromptSet,
                paths: OutputPaths, *, fps: float | None = None, header: dict | None = None,
                progress: bool = True, on_frame: Callable | None = None,
                max_frames: int | None = None) -> TrackReport:
    """Track `prompts` through the frames of `reader`, writing `paths` as frames finish.

    KeyboardInterrupt stops the run cleanly: frames already tracked are written, every output
    is closed, and the report says where it stopped (then the interrupt is raised again).
    `max_frames` stops after the first that many frames.
    """
    from tqdm import tqdm

    info = reader.info
    fps = fps or info.fps or 30.0
    header = dict(header or {})
    header.update(width=info.width, height=info.height, fps=fps)
    writer = _Writer(paths, info, header, fps)
    frames_in: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    thread = threading.Thread(target=_reader, name="samv2-reader", daemon=True,
                              args=(reader, tracker.cfg.image_size, frames_in, stop, max_frames))
    total = info.num_frames
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True,
               desc="tracking")
    report, clock = TrackReport(), _Clock()
    error: BaseException | None = None
    thread.start()
    try:
        _track_frames(tracker, frames_in, prompts, writer, bar, clock, on_frame)
    except KeyboardInterrupt:
        report.stopped = "interrupted"
        error = KeyboardInterrupt()
    except BaseException as e:
        report.stopped = f"error: {e}"
        error = e
    finally:
        stop.set()
        bar.close()
        error = _finish(writer, report, error)
        report.frames = writer.done
        report.seconds, report.steady_fps = clock.seconds(), clock.steady_fps()
    if error is not None:
        error.report = report  # the caller says where the run stopped
        raise error
    return report


class _Clock:
    """Wall time of the run, and the frame rate after the first two frames (compilation)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tracked = 0
        self.t2 = self.t_last = None

    def tick(self) -> None:
        self.tracked += 1
        self.t_last = time.perf_counter()
        if self.tracked == 2:
            self.t2 = self.t_last

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def steady_fps(self) -> float | None:
        if self.t2 is None or self.tracked <= 2:
            return None
        return (self.tracked - 2) / (self.t_last - self.t2)


def _track_frames(tracker, frames_in: queue.Queue, prompts: PromptSet, writer: _Writer, bar,
                  clock: _Clock, on_frame) -> None:
    """The main thread's loop: track each frame the reader hands over, pass it to the writer."""
    while True:
        item = frames_in.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        idx, rgb, image = item
        raise_pending()
        result = tracker.track(rgb, prompts.for_frame(idx), image=image)
        writer.put((idx, rgb, result.obj_ids, result.masks, result.object_scores))
        clock.tick()
        bar.update(1)
        if on_frame is not None:
            on_frame(result)


def _finish(writer: _Writer, report: TrackReport, error: BaseException | None):
    """Write what is queued and close every output, marking the JSON complete or where it
    stopped; returns the error the run ends with (the first one)."""
    status = {"complete": report.stopped is None}
    if report.stopped is not None:
        status.update(stopped=report.stopped, frames_written=writer.done)
    try:
        writer.finish(status)
    except BaseException as e:
        if error is None:
            report.stopped = f"error: {e}"
            error = e
    return error
