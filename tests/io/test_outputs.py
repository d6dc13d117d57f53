"""Result writers of `samv2 track`: label PNGs, overlay video, COCO RLE and the results JSON."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from samv2_jax.io import outputs
from samv2_jax.io.outputs import (
    PALETTE,
    LabelPngWriter,
    OverlayVideoWriter,
    ResultsJsonWriter,
    label_map,
    mask_box,
    object_record,
    overlay,
    read_label_png,
    rle_decode,
    rle_encode,
    write_label_png,
)

MODULE_FILE = Path(outputs.__file__)

# Children import outputs.py under a bare stand-in for the package: running samv2_jax's
# __init__ would pull in jax and cost seconds per subprocess.
_CHILD_PRELUDE = textwrap.dedent(f"""
    import os, signal, sys, types
    import numpy as np
    package = types.ModuleType("samv2_jax")
    package.__path__ = [{str(MODULE_FILE.parent)!r}]
    sys.modules["samv2_jax"] = package
    from samv2_jax.io import outputs
    """)


def run_and_kill(body: str) -> None:
    """Run `body` in a child that then SIGKILLs itself (no close, no atexit, no flush)."""
    code = _CHILD_PRELUDE + textwrap.dedent(body) + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stderr)


def decode_all(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- palette and label maps -------------------------------------------------------------------

def test_palette_is_the_voc_colour_map():
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert PALETTE[:9].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                                    [0, 0, 128], [128, 0, 128], [0, 128, 128],
                                    [128, 128, 128], [64, 0, 0]]
    assert PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    with pytest.raises(ValueError):
        PALETTE[1] = 0  # shared by every writer: read-only


def test_label_map_overlaps_follow_logits_or_order():
    masks = np.zeros((3, 4, 6), bool)
    masks[0, :, :4] = True   # id 5
    masks[1, :, 2:] = True   # id 7, overlaps id 5 in columns 2..3
    masks[2, 0, 0] = True    # id 9, overlaps id 5 at (0, 0)
    ids = [5, 7, 9]
    logits = np.full(masks.shape, -3.0, np.float32)
    logits[0] = 2.0
    logits[1] = 1.0
    logits[1, 3, 3] = 4.0    # id 7 wins this one overlapping pixel
    logits[2, 0, 0] = 0.5    # below id 5's 2.0 there
    got = label_map(masks, ids, logits)
    assert got.dtype == np.uint8 and got.shape == (4, 6)
    expected = np.array([[5, 5, 5, 5, 7, 7]] * 4, np.uint8)
    expected[3, 3] = 7
    np.testing.assert_array_equal(got, expected)
    # Without logits the later object wins every overlap.
    later = label_map(masks, ids)
    expected = np.array([[5, 5, 7, 7, 7, 7]] * 4, np.uint8)
    expected[0, 0] = 9
    np.testing.assert_array_equal(later, expected)
    # Background stays 0; no objects at all gives an all-zero map of the right size.
    lone = np.zeros((1, 4, 6), bool)
    lone[0, 1, 1] = True
    assert label_map(lone, [3]).sum() == 3
    assert label_map(np.zeros((0, 4, 6), bool), []).shape == (4, 6)


@pytest.mark.parametrize("bad", [0, 256, -1, 1.5, True, "2", None])
def test_label_map_rejects_ids_outside_1_to_255(bad):
    with pytest.raises(ValueError, match="1..255"):
        label_map(np.zeros((1, 2, 2), bool), [bad])


def test_label_map_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 masks but 1"):
        label_map(np.zeros((2, 2, 2), bool), [1])
    with pytest.raises(ValueError, match="logits shape"):
        label_map(np.zeros((1, 2, 2), bool), [1], np.zeros((1, 3, 3)))
    assert label_map(np.zeros((1, 2, 2), bool), [np.int64(255)]).max() == 0


# --- PNGs -------------------------------------------------------------------------------------

def test_label_png_round_trip_is_palettized_and_atomic(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    path = tmp_path / "00007.png"
    write_label_png(path, labels)
    np.testing.assert_array_equal(read_label_png(path), labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        pal = np.frombuffer(bytes(img.getpalette()), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(pal[:256], PALETTE)
    # Rewriting replaces the file; nothing but the PNG is left in the folder.
    write_label_png(path, np.ones((5, 4), np.int64))
    np.testing.assert_array_equal(read_label_png(path), np.ones((5, 4)))
    assert os.listdir(tmp_path) == ["00007.png"]
    with pytest.raises(ValueError, match="0..255"):
        write_label_png(tmp_path / "bad.png", np.full((2, 2), 300))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        write_label_png(tmp_path / "bad.png", np.zeros((2, 2, 1), np.uint8))
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        read_label_png(tmp_path / "rgb.png")


def test_failed_png_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "00000.png"
    write_label_png(path, np.full((3, 3), 4, np.uint8))

    def broken_save(self, fp, *a, **k):
        fp.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_label_png(path, np.full((3, 3), 9, np.uint8))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["00000.png"]
    assert (read_label_png(path) == 4).all()


def test_label_png_writer_names_frames_and_reports_bad_folders(tmp_path):
    folder = tmp_path / "out" / "masks"
    writer = LabelPngWriter(folder)
    for i in (0, 1, 12345):
        writer.write(i, np.full((4, 4), i % 7, np.uint8))
    writer.close()
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "12345.png"]
    assert (read_label_png(folder / "12345.png") == 12345 % 7).all()
    with pytest.raises(ValueError, match="closed"):
        writer.write(2, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="non-negative"):
        LabelPngWriter(folder).write(-1, np.zeros((4, 4), np.uint8))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not a folder") as info:
        LabelPngWriter(blocker)
    assert str(blocker) in str(info.value)
    with pytest.raises(OSError, match="cannot create") as info:
        LabelPngWriter(blocker / "sub")
    assert str(blocker / "sub") in str(info.value)


# --- overlay ----------------------------------------------------------------------------------

def test_overlay_tints_objects_and_leaves_background(tmp_path):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    labels = np.zeros((40, 50), np.uint8)
    labels[5:20, 5:25] = 1
    labels[10:30, 20:45] = 2  # touches object 1
    out = overlay(frame, labels, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    bg = labels == 0
    np.testing.assert_array_equal(out[bg], frame[bg])
    # Interior pixels are the rounded half-way blend; outline pixels the full colour.
    interior = (slice(12, 18), slice(8, 15))
    want = (frame[interior].astype(int) + PALETTE[1].astype(int) + 1) // 2
    np.testing.assert_allclose(out[interior], want, atol=1)
    assert (out[5, 5:25] == PALETTE[1]).all()       # top edge of object 1
    assert (out[29, 20:45] == PALETTE[2]).all()     # bottom edge of object 2
    assert (out[15, 20] == PALETTE[2]).all()        # object 2 where it meets object 1
    # Every object pixel moved toward its colour.
    for obj in (1, 2):
        m = labels == obj
        before = np.abs(frame[m].astype(int) - PALETTE[obj]).sum(1)
        after = np.abs(out[m].astype(int) - PALETTE[obj]).sum(1)
        assert (after <= before).all() and (after < before).mean() > 0.95
    np.testing.assert_array_equal(overlay(frame, labels, alpha=0.0, outline=False), frame)
    assert (overlay(frame, labels, alpha=1.0, outline=False)[labels == 2] == PALETTE[2]).all()
    assert overlay(frame, np.zeros_like(labels)) is not frame
    with pytest.raises(ValueError):
        overlay(frame, labels[:-1])
    with pytest.raises(ValueError):
        overlay(frame.astype(np.float32), labels)


def test_overlay_outline_on_720p():
    rng = np.random.default_rng(3)
    h, w = 720, 1280
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack([(xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
                      for cx, cy, r in ((300, 300, 200), (700, 400, 250), (1000, 200, 150),
                                        (600, 600, 100))])
    labels = label_map(masks, [1, 2, 3, 4])
    # (its speed is measured where it counts, in benchmarks/track_command.py)
    # 2 px outline at this size: the pixel just inside the rim is full colour too.
    out = overlay(frame, labels)
    assert (out[300, 101] == PALETTE[1]).all() and (out[300, 102] == PALETTE[1]).all()


# --- COCO RLE ---------------------------------------------------------------------------------

def _reference_counts(mask: np.ndarray) -> list[int]:
    """Run lengths in column-major order, first run background, by a plain loop."""
    flat = mask.T.reshape(-1).tolist()
    counts, current, run = [], False, 0
    for v in flat:
        if bool(v) != current:
            counts.append(run)
            current, run = bool(v), 0
        run += 1
    counts.append(run)
    return counts


def _reference_decode_string(s: str) -> list[int]:
    """COCO's counts string read as documented: 6-bit chars (char - 48), 5 value bits each,
    bit 5 = continue, sign from bit 4 of the last char; counts from the 4th on are stored as
    differences to the count two before."""
    values = []
    pos = 0
    while pos < len(s):
        shift, value = 0, 0
        while True:
            c = ord(s[pos]) - 48
            pos += 1
            value += (c & 31) << shift
            shift += 5
            if not c & 32:
                if c & 16:
                    value -= 1 << shift
                break
        values.append(value)
    for i in range(3, len(values)):
        values[i] += values[i - 2]
    return values


def _masks_to_check():
    rng = np.random.default_rng(4)
    for shape in [(1, 1), (7, 5), (33, 17), (61, 97), (2, 300)]:
        yield rng.random(shape) < 0.3
        yield rng.random(shape) < 0.97
        yield np.zeros(shape, bool)
        yield np.ones(shape, bool)
    blob = np.zeros((129, 65), bool)
    blob[20:100, 10:50] = True
    yield blob
    yield np.zeros((0, 3), bool)


def test_rle_round_trip_and_format_against_an_independent_decoder():
    for mask in _masks_to_check():
        rle = rle_encode(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        back = rle_decode(rle)
        assert back.dtype == bool and back.shape == mask.shape
        np.testing.assert_array_equal(back, mask)
        if mask.size:
            assert _reference_decode_string(rle["counts"]) == _reference_counts(mask)
        # Uncompressed counts (a list of ints) decode too.
        uncompressed = {"size": list(mask.shape), "counts": _reference_counts(mask)}
        np.testing.assert_array_equal(rle_decode(uncompressed), mask)
    # Known strings: 35 background pixels is "S1"; a full 7x5 mask "0S1" (empty first run).
    assert rle_encode(np.zeros((7, 5), bool))["counts"] == "S1"
    assert rle_encode(np.ones((7, 5), bool))["counts"] == "0S1"
    assert rle_decode({"size": [7, 5], "counts": b"0S1"}).all()
    with pytest.raises(ValueError, match="sum to"):
        rle_decode({"size": [7, 5], "counts": [3, 4]})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_rle_matches_pycocotools():
    # pycocotools is not among the project's test dependencies; the test above checks the
    # same format without it.
    mask_api = pytest.importorskip("pycocotools.mask")
    for mask in _masks_to_check():
        ours = rle_encode(mask)
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours["counts"] == theirs["counts"].decode()
        assert ours["size"] == list(theirs["size"])
        np.testing.assert_array_equal(mask_api.decode({"size": ours["size"],
                                                       "counts": ours["counts"].encode()}), mask)


def test_mask_box_and_object_record():
    mask = np.zeros((10, 12), bool)
    assert mask_box(mask) is None
    mask[2:5, 3:9] = True
    mask[7, 1] = True
    assert mask_box(mask) == [1, 2, 8, 7]
    rec = object_record(np.int64(3), mask, np.float32(2.5))
    assert rec["obj_id"] == 3 and type(rec["obj_id"]) is int
    assert rec["score"] == 2.5 and type(rec["score"]) is float
    assert rec["visible"] is True and rec["area"] == 19 and rec["box"] == [1, 2, 8, 7]
    np.testing.assert_array_equal(rle_decode(rec["rle"]), mask)
    json.dumps(rec)  # plain Python types only
    assert object_record(1, mask, -0.1)["visible"] is False
    empty = object_record(2, np.zeros((4, 4), bool), 5.0)
    assert empty["visible"] is False and empty["area"] == 0 and empty["box"] is None


# --- overlay video ----------------------------------------------------------------------------

def _colour_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = ((37 * i) % 200 + 20, 220 - 15 * i, 90)
        f[: h // 2, : w // 2] = (200, 40, (60 + 25 * i) % 250)
        frames.append(f)
    return frames


@pytest.mark.parametrize("size", [(97, 61), (64, 48)])
@pytest.mark.parametrize("ext,codec", [(".mp4", None), (".mp4", "mpeg4"), (".mov", None),
                                       (".mkv", None), (".webm", None)])
def test_overlay_video_decodes_with_all_frames(tmp_path, size, ext, codec):
    w, h = size
    frames = _colour_frames(8, h, w)
    path = tmp_path / f"overlay{ext}"
    with OverlayVideoWriter(path, w, h, 29.97, codec) as writer:
        for f in frames:
            writer.write(f)
    writer.close()  # idempotent
    decoded = decode_all(path)
    assert len(decoded) == len(frames)
    # Odd sizes are padded by one pixel, repeating the last column / row.
    assert decoded[0].shape == (h + h % 2, w + w % 2, 3)
    for got, want in zip(decoded, frames):
        assert np.abs(got[:h, :w].astype(int) - want).mean() < 6
        assert np.abs(got[h - 1:, w - 1:].astype(int) - want[h - 1, w - 1]).mean() < 12
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == Fraction(2997, 100)
    with pytest.raises(ValueError, match="closed"):
        writer.write(frames[0])


def test_overlay_video_frame_rate_and_codec_default(tmp_path):
    path = tmp_path / "ntsc.mp4"
    writer = OverlayVideoWriter(path, 32, 32, 30000 / 1001)
    assert writer.codec == ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    for f in _colour_frames(3, 32, 32):
        writer.write(f)
    writer.close()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        times = [float(fr.time) for fr in c.decode(stream)]
    np.testing.assert_allclose(times, [0, 1001 / 30000, 2002 / 30000], atol=1e-6)
    for fps, rate in ((np.float32(25), 25), (Fraction(24000, 1001), Fraction(24000, 1001)),
                      (12.5, Fraction(25, 2))):
        with OverlayVideoWriter(tmp_path / "r.mkv", 8, 8, fps) as w:
            assert w.rate == rate


def test_overlay_video_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown video container"):
        OverlayVideoWriter(tmp_path / "x.gif", 16, 16, 25)
    with pytest.raises(ValueError, match="not supported"):
        OverlayVideoWriter(tmp_path / "x.webm", 16, 16, 25, codec="libx264")
    with pytest.raises(ValueError, match="fps"):
        OverlayVideoWriter(tmp_path / "x.mp4", 16, 16, 0)
    with pytest.raises(ValueError, match="width"):
        OverlayVideoWriter(tmp_path / "x.mp4", 0, 16, 25)
    with pytest.raises(OSError, match="cannot create the overlay video"):
        OverlayVideoWriter(tmp_path / "missing" / "x.mp4", 16, 16, 25)
    writer = OverlayVideoWriter(tmp_path / "x.mp4", 16, 16, 25)
    with pytest.raises(ValueError, match=r"\[16, 16, 3\] uint8"):
        writer.write(np.zeros((16, 17, 3), np.uint8))
    writer.close()


@pytest.mark.parametrize("ext,k", [(".mp4", 5), (".mp4", 0), (".mov", 3), (".mkv", 4),
                                   (".webm", 2)])
def test_overlay_video_survives_sigkill(tmp_path, ext, k):
    path = tmp_path / f"killed{ext}"
    run_and_kill(f"""
        w = outputs.OverlayVideoWriter({str(path)!r}, 97, 61, 25)
        for i in range({k}):
            frame = np.full((61, 97, 3), 20 + 25 * i, np.uint8)
            w.write(frame)
        """)
    if ext in (".mkv", ".webm") and k == 0:
        return  # FFmpeg will not open a Matroska file without a single cluster
    decoded = decode_all(path)
    assert len(decoded) == k
    for i, frame in enumerate(decoded):
        assert abs(frame[:61, :97].mean() - (20 + 25 * i)) < 4


def test_overlay_video_write_error_keeps_earlier_frames(tmp_path, monkeypatch):
    path = tmp_path / "full.mp4"
    writer = OverlayVideoWriter(path, 48, 32, 25)
    frames = _colour_frames(3, 32, 48)
    writer.write(frames[0])
    writer.write(frames[1])
    good_size = path.stat().st_size
    real_write = os.write

    def disk_full(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])  # a partial fragment, then the error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="full.mp4") as info:
        writer.write(frames[2])
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        writer.write(frames[2])  # the encoder state no longer matches the file
    writer.close()
    assert path.stat().st_size == good_size  # the partial fragment was cut off
    assert len(decode_all(path)) == 2


# --- results JSON -----------------------------------------------------------------------------

def _objects(i: int) -> list[dict]:
    mask = np.zeros((6, 8), bool)
    mask[i % 6, : i + 1] = True
    return [object_record(1, mask, 1.5 - i), object_record(2, ~mask, -2.0)]


def test_results_json_is_valid_after_every_frame(tmp_path):
    path = tmp_path / "results.json"
    header = {"video": "clip ü.mp4", "model": "sam2.1_hiera_tiny", "objects": [1, 2]}
    writer = ResultsJsonWriter(path, header)
    doc = json.loads(path.read_text())
    assert doc == {**header, "frames": [], "complete": False}
    for i in range(4):
        writer.add_frame(i, _objects(i))
        doc = json.loads(path.read_text())
        assert [f["frame_idx"] for f in doc["frames"]] == list(range(i + 1))
        assert doc["frames"][i]["objects"] == _objects(i)
        assert doc["complete"] is False and doc["video"] == "clip ü.mp4"
    assert len(path.read_text().splitlines()) == 4 + 2  # one line per frame
    writer.close()
    writer.close()  # idempotent
    raw = path.read_text()
    doc = json.loads(raw)
    assert doc["complete"] is True and len(doc["frames"]) == 4
    assert list(doc)[-1] == "complete" and raw.endswith("\n")
    with pytest.raises(ValueError, match="closed"):
        writer.add_frame(4, [])


def test_results_json_close_merges_status(tmp_path):
    path = tmp_path / "results.json"
    writer = ResultsJsonWriter(path, {})
    writer.add_frame(0, [])
    writer.add_frame(1, _objects(1))
    status = {"complete": False, "stopped_after_frame": 1, "reason": "interrupted"}
    writer.close(status)
    doc = json.loads(path.read_text())
    assert doc == {"frames": [{"frame_idx": 0, "objects": []},
                              {"frame_idx": 1, "objects": _objects(1)}], **status}


def test_results_json_rejects_bad_input_without_breaking_the_file(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        ResultsJsonWriter(tmp_path / "a.json", {"frames": 1})
    path = tmp_path / "b.json"
    writer = ResultsJsonWriter(path, {"video": "v"})
    writer.add_frame(0, _objects(0))
    with pytest.raises(ValueError):
        writer.add_frame(1, [{"obj_id": 1, "score": float("nan")}])
    with pytest.raises(ValueError, match="clash"):
        writer.close({"video": "other"})
    assert json.loads(path.read_text())["frames"][0]["frame_idx"] == 0
    writer.add_frame(1, [{"obj_id": np.int32(1), "score": np.float32(0.5),
                          "visible": np.bool_(True), "box": np.arange(4)}])
    writer.close()
    doc = json.loads(path.read_text())
    assert doc["frames"][1]["objects"] == [{"obj_id": 1, "score": 0.5, "visible": True,
                                            "box": [0, 1, 2, 3]}]
    with pytest.raises(OSError, match="cannot create the results file"):
        ResultsJsonWriter(tmp_path / "missing" / "c.json", {})


def test_results_json_survives_sigkill(tmp_path):
    path = tmp_path / "results.json"
    run_and_kill(f"""
        w = outputs.ResultsJsonWriter({str(path)!r}, {{"video": "v.mp4"}})
        for i in range(3):
            mask = np.zeros((5, 5), bool)
            mask[i, i] = True
            w.add_frame(i, [outputs.object_record(1, mask, 1.0)])
        """)
    doc = json.loads(path.read_text())
    assert doc["video"] == "v.mp4" and doc["complete"] is False
    assert [f["frame_idx"] for f in doc["frames"]] == [0, 1, 2]
    assert doc["frames"][2]["objects"][0]["box"] == [2, 2, 2, 2]


def test_results_json_full_disk_keeps_a_valid_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    writer = ResultsJsonWriter(path, {"video": "v"})
    real_pwrite = os.pwrite
    calls = {"n": 0}

    def pwrite_filling_up(fd, data, offset):
        calls["n"] += 1
        if calls["n"] == 3:  # the third frame: half of it lands, then the disk is full
            real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite_filling_up)
    writer.add_frame(0, _objects(0))
    writer.add_frame(1, _objects(1))
    with pytest.raises(OSError) as info:
        writer.add_frame(2, _objects(2))
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    doc = json.loads(path.read_text())
    assert [f["frame_idx"] for f in doc["frames"]] == [0, 1] and doc["complete"] is False
    # Once there is room again the writer carries on from the last good frame.
    writer.add_frame(2, _objects(2))
    writer.close({"complete": False, "reason": "test"})
    doc = json.loads(path.read_text())
    assert [f["frame_idx"] for f in doc["frames"]] == [0, 1, 2]
    assert doc["reason"] == "test"


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_temp"])
def test_label_png_write_failing_midway_leaves_no_file(tmp_path, monkeypatch, unnamed):
    if not unnamed:
        monkeypatch.setattr(outputs, "_unnamed_file", lambda folder, data: None)
    elif sys.platform.startswith("linux"):  # the path a killed run leaves nothing behind on
        named = outputs._unnamed_file(tmp_path, b"whole")
        assert named is not None and named.read_bytes() == b"whole"
        named.unlink()
    labels = np.zeros((20, 30), np.uint8)
    outputs.write_label_png(tmp_path / "00000.png", labels)
    real_write = os.write

    def full_disk(fd, data):
        real_write(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "write", full_disk)
    with pytest.raises(OSError):
        outputs.write_label_png(tmp_path / "00001.png", labels + 1)
    with pytest.raises(OSError):
        outputs.write_label_png(tmp_path / "00000.png", labels + 1)  # an existing frame stays whole
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]
    assert (outputs.read_label_png(tmp_path / "00000.png") == 0).all()
