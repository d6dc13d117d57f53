"""`samv2 sample`: a clip, a picture and a DAVIS-style dataset that the other commands read."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samv2_jax.app.cli import main
from samv2_jax.evaluation.dataset import dataset_videos, read_labels
from samv2_jax.io.frames import open_video


def test_clip_and_picture(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "clip.mp4"), "--frames", "5"]) == 0
    with open_video(str(tmp_path / "clip.mp4")) as reader:
        frames = list(reader)
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3)
    assert main(["sample", str(tmp_path / "photo.jpg")]) == 0
    photo = np.asarray(Image.open(tmp_path / "photo.jpg"))
    assert photo.shape == (480, 640, 3)
    assert photo[240, 320, 0] > 150 and photo[240, 320, 1] < 100  # the red disc at the centre


def test_dataset_is_read_by_eval_and_has_splits(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["sample", f"{root}/", "--frames", "4"]) == 0
    images, annotations, names = dataset_videos(root)
    assert names == [f"video{i:03d}" for i in range(4)]
    frames = sorted(p.stem for p in (images / names[0]).glob("*.jpg"))
    assert frames == ["00000", "00001", "00002", "00003"]
    labels = read_labels(annotations / names[0], frames)
    assert labels.shape == (4, 240, 320) and set(np.unique(labels[0])) == {0, 1, 2}
    assert (root / "ImageSets/2017/train.txt").read_text().split() == names[:3]
    assert (root / "ImageSets/2017/val.txt").read_text().split() == names[3:]
    # A second run refuses to mix into the folder unless asked to replace it.
    assert main(["sample", f"{root}/"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sample", f"{root}/", "--overwrite", "--frames", "3"]) == 0
    assert len(list((images / names[0]).glob("*.jpg"))) == 3


def test_bad_name_is_one_clear_line(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "x.gif")]) == 1
    err = capsys.readouterr().err
    assert "x.gif" in err and "DIR/" in err and "Traceback" not in err


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
