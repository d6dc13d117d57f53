"""Training datasets read from disk: small DAVIS-, SA-V-, SA-1B- and COCO-style datasets are
written here with known masks; clips, object ids, masks and frame order must come back exactly,
and broken data must give an error that names the file (or be skipped and counted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samv2_jax.io.outputs import rle_encode
from samv2_jax.train.data import clips, pipeline, sources, synthetic
from samv2_jax.train.data.sources import DataError

T, H, W = 6, 48, 64


@pytest.fixture(scope="module")
def vids():
    return synthetic.videos(3, T, H, W, num_objects=2, seed=1)


@pytest.fixture(scope="module")
def davis(tmp_path_factory, vids):
    root = tmp_path_factory.mktemp("davis")
    names = sorted(vids)
    return synthetic.write_davis(root, vids, {"train": names[:2], "val": names[2:]})


def _read_jpgs(folder, indices):
    return np.stack([np.asarray(Image.open(folder / f"{i:05d}.jpg").convert("RGB"))
                     for i in indices])


def test_davis_folder_lists_split_and_frames(davis, vids):
    src = sources.VOSFolder(str(davis), split="train")
    assert src.names == sorted(vids)[:2]
    val = sources.VOSFolder(str(davis), split="val")
    assert val.names == sorted(vids)[2:]
    v = src.video(1)
    assert [f.index for f in v.frames] == list(range(T))
    labels = vids[src.names[1]][1]
    for t in (0, 3, 5):
        got = v.masks.load(t)
        assert sorted(got) == sorted(int(i) for i in np.unique(labels[t]) if i)
        for obj, m in got.items():
            np.testing.assert_array_equal(m, labels[t] == obj)
    # sample_rate and truncation as the official PNGRawDataset
    v2 = sources.VOSFolder(str(davis), split="train", sample_rate=2, truncate_video=5).video(0)
    assert [f.index for f in v2.frames] == [0, 2, 4]


def test_clip_frames_objects_and_masks_exact(davis, vids):
    src = sources.VOSFolder(str(davis), split="train")
    cfg = clips.ClipConfig(num_frames=3, max_num_objects=2, image_size=W, augment=None)
    rng = np.random.default_rng(5)
    seen_starts, seen_orders = set(), set()
    for _ in range(12):
        i = int(rng.integers(len(src)))
        video = src.video(i)
        clip = clips.make_clip(video, cfg, rng)
        idx = clip["frame_idx"]
        assert np.all(np.diff(idx) == 1)  # contiguous, forward
        seen_starts.add(int(idx[0]))
        labels = vids[src.names[i]][1]
        ids = clip["obj_ids"][clip["obj_valid"]]
        seen_orders.add(tuple(ids))
        assert set(ids) <= {int(v) for v in np.unique(labels[idx[0]]) if v}
        # masks at the clip's square size equal the known labels resized the same way
        for k, obj in enumerate(ids):
            for t, fi in enumerate(idx):
                from samv2_jax.train.data.augment import resize_masks

                want = resize_masks((labels[fi] == obj)[None].astype(np.uint8), W)[0]
                np.testing.assert_array_equal(clip["masks"][t, k], want)
        frames = _read_jpgs(davis / "JPEGImages" / src.names[i], idx)
        want = np.stack([np.asarray(Image.fromarray(f).resize((W, W), Image.BILINEAR))
                         for f in frames])
        np.testing.assert_array_equal(clip["images"], want)
    assert len(seen_starts) > 1 and len(seen_orders) > 1  # windows and object order random


def test_reverse_time_and_first_frame_objects(davis):
    src = sources.VOSFolder(str(davis), split="train")
    cfg = clips.ClipConfig(num_frames=4, max_num_objects=1, reverse_time_prob=1.0,
                           image_size=32, augment=None)
    clip = clips.make_clip(src.video(0), cfg, np.random.default_rng(0))
    assert np.all(np.diff(clip["frame_idx"]) == -1)
    assert clip["obj_valid"].tolist() == [True]
    assert clip["masks"][0, 0].any()  # chosen among the objects visible in the first frame


def test_sav_mp4_and_jpeg_frames(tmp_path, vids):
    name = sorted(vids)[0]
    frames, labels = vids[name]
    frames = np.concatenate([frames, frames[::-1]])  # 12 frames: 3 annotated every 4
    labels = np.concatenate([labels, labels[::-1]])
    for as_mp4 in (True, False):
        root = synthetic.write_sav(tmp_path / f"sav{int(as_mp4)}", {name: (frames, labels)},
                                   ann_every=4, as_mp4=as_mp4)
        src = sources.SAVFolder(str(root), ann_every=4)
        v = src.video(0)
        assert [f.index for f in v.frames] == [0, 4, 8]
        got = v.read_images(v.frames[1:])
        if as_mp4:
            import av

            with av.open(str(root / f"{name}.mp4")) as c:
                decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            want = [decoded[4], decoded[8]]
        else:
            want = list(_read_jpgs(root / name, [4, 8]))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.asarray(a), b)
        m = v.masks.load(8)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        assert sorted(m) == list(range(len(ids)))
        for o, obj in enumerate(ids):
            np.testing.assert_array_equal(m[o], labels[8] == obj)


def test_sa1b_and_coco_are_one_frame_clips(tmp_path, vids):
    name = sorted(vids)[0]
    image, labels = vids[name][0][0], vids[name][1][0]
    root = synthetic.write_sa1b(tmp_path / "sa1b", {7: (image, labels)})
    src = sources.SA1BFolder(str(root))
    assert src.names == ["sa_7"]
    spec = pipeline.parse_data_spec(f"sa1b:{root}")
    cfg = spec.clip_config(32, None)
    assert (cfg.num_frames, cfg.max_num_objects) == (1, 16)
    clip = clips.make_clip(src.video(0), cfg, np.random.default_rng(0))
    ids = sorted(int(i) for i in np.unique(labels) if i)
    assert clip["images"].shape == (1, 32, 32, 3) and clip["obj_valid"].sum() == len(ids)
    # COCO: one polygon object (a rectangle) and one RLE object
    Image.fromarray(image).save(tmp_path / "a.jpg")
    rect = [[10.0, 5.0, 40.0, 5.0, 40.0, 30.0, 10.0, 30.0]]
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
           "annotations": [
               {"image_id": 1, "segmentation": rect, "area": 750, "iscrowd": 0},
               {"image_id": 1, "segmentation": rle_encode(labels == ids[0]), "area": 10,
                "iscrowd": 0},
               {"image_id": 1, "segmentation": rle_encode(labels == ids[0]), "area": 10,
                "iscrowd": 1}]}
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    coco = sources.COCOImages(str(tmp_path), str(tmp_path / "inst.json"))
    masks = coco.video(0).masks.load(0)
    assert sorted(masks) == [0, 1]  # the crowd region is left out
    from pycocotools import mask as mask_utils

    want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rect, H, W))).astype(bool)
    np.testing.assert_array_equal(masks[0], want)
    np.testing.assert_array_equal(masks[1], labels == ids[0])


def _write_png_p(path, labels: np.ndarray, palette: list[int]) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = labels.shape
    raw = b"".join(b"\x00" + labels[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)  # 8-bit palette colour
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"PLTE", bytes(palette)) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _broken_copy(tmp_path, davis, name):
    import shutil

    root = tmp_path / name
    shutil.copytree(davis, root)
    return root


def test_bad_data_errors_name_the_file(tmp_path, davis):
    video = sorted(p.name for p in (davis / "JPEGImages").iterdir())[0]
    cfg = clips.ClipConfig(num_frames=T, max_num_objects=2, image_size=32, augment=None)
    rng = np.random.default_rng(0)

    root = _broken_copy(tmp_path, davis, "missing")
    (root / "JPEGImages" / video / "00003.jpg").unlink()
    with pytest.raises(DataError, match=r"frame 3 of video .* is missing.*00003\.png"):
        sources.VOSFolder(str(root)).video(0)

    root = _broken_copy(tmp_path, davis, "size")
    Image.new("P", (W + 2, H)).save(root / "Annotations" / video / "00002.png")
    with pytest.raises(DataError, match=r"mask .*00002\.png.* is 66x48, but its frame is 64x48"):
        clips.make_clip(sources.VOSFolder(str(root)).video(0), cfg, rng)

    root = _broken_copy(tmp_path, davis, "palette")
    # Pillow remaps such pixels when it saves, so the file is written by hand
    _write_png_p(root / "Annotations" / video / "00001.png", np.full((H, W), 9, np.uint8),
                 [0, 0, 0, 255, 0, 0, 0, 255, 0])  # 3 palette entries, pixel value 9
    with pytest.raises(DataError, match=r"00001\.png.*pixel value 9.*only 3 entries"):
        clips.make_clip(sources.VOSFolder(str(root)).video(0), cfg, rng)

    root = _broken_copy(tmp_path, davis, "rgb")
    Image.new("RGB", (W, H)).save(root / "Annotations" / video / "00000.png")
    with pytest.raises(DataError, match=r"00000\.png.*mode 'RGB'.*palettized"):
        clips.make_clip(sources.VOSFolder(str(root)).video(0), cfg, rng)

    root = _broken_copy(tmp_path, davis, "empty")
    for f in (root / "JPEGImages" / video).iterdir():
        f.unlink()
    for f in (root / "Annotations" / video).iterdir():
        f.unlink()
    with pytest.raises(DataError, match=rf"video '{video}' is empty"):
        sources.VOSFolder(str(root)).video(0)

    with pytest.raises(DataError, match="fewer than num_frames=99"):
        clips.make_clip(sources.VOSFolder(str(davis)).video(0),
                        clips.ClipConfig(num_frames=99, image_size=32, augment=None), rng)


def test_stream_skips_bad_videos_when_asked_and_counts_them(tmp_path, davis):
    root = _broken_copy(tmp_path, davis, "skip")
    video = sorted(p.name for p in (root / "JPEGImages").iterdir())[0]
    for t in range(T):  # every mask of the first video unreadable as labels
        Image.new("RGB", (W, H)).save(root / "Annotations" / video / f"{t:05d}.png")
    cfg = pipeline.LoaderConfig(global_batch_size=1, image_size=32, num_frames=2,
                                augment=None)
    strict = iter(pipeline.make_train_stream([f"davis:{root}"], cfg)[0])
    with pytest.raises(DataError, match=r"0000\d\.png.*--skip-bad-data"):
        for _ in range(6):
            next(strict)
    lenient = iter(pipeline.make_train_stream(
        [f"davis:{root}"], pipeline.LoaderConfig(global_batch_size=1, image_size=32,
                                                 num_frames=2, augment=None,
                                                 skip_bad_data=True))[0])
    batches = [next(lenient) for _ in range(9)]
    assert sum(int(b["skipped"].sum()) for b in batches) >= 1
    assert all(b["video"][0] != 0 for b in batches)  # the broken video never comes out


def test_stream_state_restores_exactly_and_hosts_share_the_data(davis):
    cfg = pipeline.LoaderConfig(global_batch_size=2, image_size=32, num_frames=2, seed=3)
    stream, _, _ = pipeline.make_train_stream([f"davis:{davis}"], cfg)
    it = iter(stream)
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    after = [next(it) for _ in range(2)]
    again = iter(stream)
    again.set_state(state)
    for a, b in zip(after, [next(again) for _ in range(2)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(first[0]["images"], after[0]["images"])
    # two hosts: each reads half of every global batch, together the one-host stream's videos
    halves = []
    for h in range(2):
        c = pipeline.LoaderConfig(global_batch_size=2, image_size=32, num_frames=2, seed=3,
                                  process_index=h, process_count=2)
        halves.append(next(iter(pipeline.make_train_stream([f"davis:{davis}"], c)[0])))
    assert [int(x["video"][0]) for x in halves] == first[0]["video"].tolist()
    # the same clips with worker processes
    w = pipeline.LoaderConfig(global_batch_size=2, image_size=32, num_frames=2, seed=3,
                              num_workers=2)
    it_w = iter(pipeline.make_train_stream([f"davis:{davis}"], w)[0])
    for a in first:
        b = next(it_w)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_mixture_follows_weights_and_keeps_shapes_per_dataset(tmp_path, davis, vids):
    name = sorted(vids)[0]
    sa1b = synthetic.write_sa1b(tmp_path / "sa1b", {i: (vids[name][0][i], vids[name][1][i])
                                                    for i in range(3)})
    cfg = pipeline.LoaderConfig(global_batch_size=1, image_size=32, num_frames=2,
                                augment=None)
    stream, _, weights = pipeline.make_train_stream(
        [f"davis:{davis},weight=3", f"sa1b:{sa1b},weight=1"], cfg)
    assert weights == [3.0, 1.0]
    it = iter(stream)
    got = [next(it) for _ in range(16)]
    kinds = [int(b["dataset"][0]) for b in got]
    assert kinds.count(0) == 12 and kinds.count(1) == 4
    for b in got:
        t = b["images"].shape[1]
        assert t == (2 if b["dataset"][0] == 0 else 1)
    # the official default: weights proportional to each dataset's batches per epoch
    _, _, default = pipeline.make_train_stream([f"davis:{davis}", f"sa1b:{sa1b}"], cfg)
    assert default == [3.0, 3.0]


def test_spec_parsing():
    s = pipeline.parse_data_spec("sav:/data/sav,ann_every=4,weight=0.5,masklets=auto")
    assert (s.kind, s.path, s.weight) == ("sav", "/data/sav", 0.5)
    assert dict(s.options) == {"ann_every": 4, "masklets": "auto"}
    with pytest.raises(ValueError, match="unknown kind 'dvis'"):
        pipeline.parse_data_spec("dvis:/x")
    with pytest.raises(ValueError, match="KIND:PATH"):
        pipeline.parse_data_spec("/just/a/path")
