"""Video frame input: parity with the official JPEG loader, video files, laziness, errors."""

from __future__ import annotations

import inspect
import os

import av
import numpy as np
import pytest
from PIL import Image

from samv2_jax.io.frames import (
    VideoInfo,
    iter_video_frames,
    load_video_frames,
    open_video,
    preprocess_frame,
    video_info,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def textured_frames(t: int, h: int, w: int) -> np.ndarray:
    """[t, h, w, 3] uint8: an astronaut crop panning, with a cat patch moving across it."""
    from skimage import data

    base, cat = data.astronaut(), data.chelsea()
    ph, pw = h // 3, w // 3
    frames = []
    for i in range(t):
        f = base[5 * i:5 * i + h, 3 * i:3 * i + w].copy()
        y, x = (4 * i) % (h - ph), (7 * i) % (w - pw)
        f[y:y + ph, x:x + pw] = cat[50:50 + ph, 100:100 + pw]
        frames.append(f)
    return np.stack(frames)


def write_frames(folder, frames, names, **save_kw):
    os.makedirs(folder, exist_ok=True)
    for f, name in zip(frames, names):
        Image.fromarray(f).save(os.path.join(folder, name), **save_kw)


def write_video(path, frames, codec, pix_fmt, fps=10, bit_rate=None, **opts):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps, options=opts)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = pix_fmt
        if bit_rate:
            s.bit_rate = bit_rate
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


def assert_our_error(excinfo, *needles, kind=ValueError):
    """Our own error type (not a PyAV/PIL subclass), no chained deep trace, a helpful text."""
    e = excinfo.value
    assert type(e) is kind, type(e)
    assert e.__cause__ is None, "deep trace leaks"
    assert e.__context__ is None or e.__suppress_context__, "deep trace leaks"
    msg = str(e).lower()
    for needle in needles:
        assert needle.lower() in msg, msg


# --- parity with the official loader -----------------------------------------------------


@pytest.mark.parametrize("image_size", [64, 256])
def test_matches_official_jpeg_loader(tmp_path, image_size):
    import torch
    from sam2.utils.misc import load_video_frames_from_jpg_images

    frames = textured_frames(6, 150, 211)
    # Mixed-case extensions, zero padding, and 10 after 2 (integer, not string, order).
    names = ["00000.jpg", "1.JPG", "2.jpeg", "10.jpg", "11.JPEG", "0012.jpg"]
    write_frames(tmp_path, frames, names, quality=90)
    # A grayscale JPEG exercises the convert("RGB") path.
    Image.fromarray(frames[3]).convert("L").save(tmp_path / "10.jpg", quality=90)
    (tmp_path / "notes.txt").write_text("ignored")

    ref, ref_h, ref_w = load_video_frames_from_jpg_images(
        str(tmp_path), image_size, offload_video_to_cpu=True, img_mean=MEAN, img_std=STD,
        async_loading_frames=False, compute_device=torch.device("cpu"))
    ref = ref.numpy().transpose(0, 2, 3, 1)

    ours, h, w = load_video_frames(tmp_path, image_size)
    assert (h, w) == (ref_h, ref_w) == (150, 211)
    assert ours.dtype == np.float32 and ours.shape == (6, image_size, image_size, 3)
    diff = float(np.abs(ours - ref).max())
    print(f"image_size={image_size}: max |ours - official| = {diff:.3g}")
    assert diff <= 1e-6
    # Same float64 division and float32 normalisation as the official: bit-identical.
    np.testing.assert_array_equal(ours, ref)
    # The per-frame transform is the same numbers.
    first = np.asarray(Image.open(tmp_path / "00000.jpg").convert("RGB"))
    np.testing.assert_array_equal(preprocess_frame(first, image_size), ours[0])


def test_png_folder_array_and_list_agree(tmp_path):
    frames = textured_frames(4, 70, 90)
    write_frames(tmp_path, frames, ["3.png", "0.png", "12.png", "7.png"])
    order = [1, 0, 3, 2]  # names sorted by integer: 0, 3, 7, 12
    expected = np.stack([preprocess_frame(frames[i], 128) for i in order])

    from_folder, h, w = load_video_frames(str(tmp_path), 128)
    assert (h, w) == (70, 90)
    np.testing.assert_array_equal(from_folder, expected)
    np.testing.assert_array_equal(load_video_frames(frames[order], 128)[0], expected)
    pil_list = [Image.fromarray(frames[i]) for i in order]
    np.testing.assert_array_equal(load_video_frames(pil_list, 128)[0], expected)
    raw = list(iter_video_frames(tmp_path))
    np.testing.assert_array_equal(np.stack(raw), frames[order])
    assert video_info(tmp_path) == VideoInfo(70, 90, 4, None, "folder")


def test_jpegs_win_over_pngs_like_official(tmp_path):
    frames = textured_frames(3, 40, 50)
    write_frames(tmp_path, frames[:2], ["0.jpg", "1.jpg"])
    write_frames(tmp_path, frames[2:], ["0.png"])
    assert video_info(tmp_path).num_frames == 2


def test_grayscale_and_rgba_converted(tmp_path):
    rgb = textured_frames(2, 40, 50)
    gray = rgb[..., :1]
    rgba = np.concatenate([rgb, np.full_like(gray, 7)], axis=-1)
    np.testing.assert_array_equal(np.stack(list(iter_video_frames(rgba))), rgb)
    g = np.stack(list(iter_video_frames(gray)))
    assert g.shape == (2, 40, 50, 3) and (g == gray).all()
    # PNG frames stored as L and RGBA go through PIL's conversion.
    Image.fromarray(rgb[0, :, :, 0]).save(tmp_path / "0.png")
    Image.fromarray(rgba[1]).save(tmp_path / "1.png")
    out = list(iter_video_frames(tmp_path))
    assert (out[0] == rgb[0, :, :, :1]).all()
    np.testing.assert_array_equal(out[1], rgb[1])


# --- video files ---------------------------------------------------------------------------


def test_lossless_video_odd_size_matches_frames(tmp_path):
    # ffv1 with an RGB pixel format is lossless and allows odd sizes (yuv420p needs even).
    frames = textured_frames(5, 61, 97)
    path = tmp_path / "clip.mkv"
    write_video(path, frames, "ffv1", "bgr0")

    with open_video(path) as reader:
        assert (reader.info.height, reader.info.width, reader.info.kind) == (61, 97, "file")
        assert reader.info.fps == pytest.approx(10.0)
        decoded = np.stack(list(reader))
    np.testing.assert_array_equal(decoded, frames)
    # Same pixels -> the file path and the array path give identical inputs.
    from_file, h, w = load_video_frames(path, 64)
    assert (h, w) == (61, 97)
    np.testing.assert_array_equal(from_file, load_video_frames(frames, 64)[0])


@pytest.mark.parametrize("name,codec", [("clip.mp4", "libx264"), ("clip.avi", "mpeg4")])
def test_lossy_video_decodes_close_to_source(tmp_path, name, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} encoder not in this FFmpeg build")
    frames = textured_frames(12, 96, 128)
    path = tmp_path / name
    opts = {"crf": "12"} if codec == "libx264" else {}
    write_video(path, frames, codec, "yuv420p", fps=25, bit_rate=4_000_000, **opts)

    info = video_info(path)
    assert (info.height, info.width) == (96, 128)
    assert info.fps == pytest.approx(25.0)
    if name.endswith(".mp4"):
        assert info.num_frames == 12
    decoded = np.stack(list(iter_video_frames(path)))
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    err = np.abs(decoded.astype(np.float64) - frames).mean(axis=(1, 2, 3))
    print(f"{codec}: mean abs error per frame max {err.max():.2f}")
    assert err.max() < 5.0
    loaded, h, w = load_video_frames(str(path), 32)
    assert loaded.shape == (12, 32, 32, 3) and (h, w) == (96, 128)


def test_video_bytes_source(tmp_path):
    frames = textured_frames(3, 32, 48)
    path = tmp_path / "clip.mkv"
    write_video(path, frames, "ffv1", "bgr0")
    out = np.stack(list(iter_video_frames(path.read_bytes())))
    np.testing.assert_array_equal(out, frames)


# --- laziness ------------------------------------------------------------------------------


def test_iter_video_file_is_lazy(tmp_path):
    # If every frame were decoded up front, cutting the file after the first frame would
    # change nothing; decoding lazily, the later frames are gone.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (40, 96, 128, 3), dtype=np.uint8)
    path = tmp_path / "noise.mkv"
    write_video(path, frames, "ffv1", "bgr0")
    size = path.stat().st_size

    gen = iter_video_frames(path)
    assert inspect.isgenerator(gen)
    np.testing.assert_array_equal(next(gen), frames[0])
    with open(path, "r+b") as f:
        f.truncate(size // 10)
    rest = 0
    try:
        for _ in gen:
            rest += 1
    except ValueError as e:
        assert "decoding" in str(e)
    assert 1 + rest < len(frames) // 2


def test_iter_folder_is_lazy(tmp_path):
    frames = textured_frames(4, 30, 40)
    write_frames(tmp_path, frames, [f"{i}.png" for i in range(4)])
    gen = iter_video_frames(tmp_path)
    next(gen)
    os.remove(tmp_path / "2.png")
    next(gen)
    with pytest.raises(ValueError) as excinfo:
        next(gen)
    assert_our_error(excinfo, "could not read frame", "2.png")


# --- errors --------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_video_frames(tmp_path / "nope", 64)
    assert_our_error(excinfo, "does not exist", "nope", kind=FileNotFoundError)


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(ValueError) as excinfo:
        iter_video_frames(tmp_path)
    assert_our_error(excinfo, "no .jpg/.jpeg/.png frames", "00000.jpg")


def test_non_integer_frame_names(tmp_path):
    frames = textured_frames(2, 30, 40)
    write_frames(tmp_path, frames, ["frame_a.jpg", "1.jpg"])
    with pytest.raises(ValueError) as excinfo:
        load_video_frames(tmp_path, 64)
    assert_our_error(excinfo, "frame_a.jpg", "integer index", "00000.jpg")


def test_duplicate_frame_index(tmp_path):
    frames = textured_frames(2, 30, 40)
    write_frames(tmp_path, frames, ["1.jpg", "01.jpg"])
    with pytest.raises(ValueError) as excinfo:
        video_info(tmp_path)
    assert_our_error(excinfo, "same index 1")


def test_corrupt_jpeg_frame(tmp_path):
    (tmp_path / "0.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError) as excinfo:
        load_video_frames(tmp_path, 64)
    assert_our_error(excinfo, "could not read frame", "0.jpg")


@pytest.mark.parametrize("content", [b"", os.urandom(4096)], ids=["empty", "random"])
def test_undecodable_video_file(tmp_path, content):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(ValueError) as excinfo:
        load_video_frames(path, 64)
    assert_our_error(excinfo, "could not open", "x.mp4", "video file")


@pytest.mark.parametrize("array,needles", [
    (np.zeros((2, 8, 8, 3), np.float32), ["uint8", "float32"]),
    (np.zeros((8, 8, 3), np.uint8), ["[t, h, w, c]", "image[none]"]),
    (np.zeros((2, 8, 8, 2), np.uint8), ["[t, h, w, c]", "(2, 8, 8, 2)"]),
    (np.zeros((0, 8, 8, 3), np.uint8), ["empty"]),
], ids=["float", "ndim3", "channels2", "empty"])
def test_bad_arrays(array, needles):
    with pytest.raises(ValueError) as excinfo:
        load_video_frames(array, 64)
    assert_our_error(excinfo, *needles)


def test_bad_list_frames():
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError) as excinfo:
        list(iter_video_frames([good, np.zeros((8, 8, 3), np.float64)]))
    assert_our_error(excinfo, "frame 1", "uint8")
    with pytest.raises(ValueError) as excinfo:
        list(iter_video_frames([good, np.zeros((9, 8, 3), np.uint8)]))
    assert_our_error(excinfo, "frame 1", "9x8", "same size")
    with pytest.raises(ValueError) as excinfo:
        iter_video_frames([])
    assert_our_error(excinfo, "empty")


@pytest.mark.parametrize("camera", [7, "/dev/video7"])
def test_camera_that_cannot_be_opened(camera):
    with pytest.raises(ValueError) as excinfo:
        iter_video_frames(camera)
    assert_our_error(excinfo, "could not open camera", "connected")
