"""`samv2 segment IMAGE --everything --out DIR`: one image and a folder of images; the files
hold exactly what the generator returns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samv2_jax.app.cli import main
from samv2_jax.automatic import SAM2AutomaticMaskGenerator
from samv2_jax.io import outputs, rle
from samv2_jax.weights.store import save_model

from conftest import converted_pair, sample_image

FLAGS = ["--points-per-side", "4", "--pred-iou-thresh", "0.3", "--stability-score-thresh",
         "0.3", "--box-nms-thresh", "0.95", "--image-size", "256", "--no-compile-cache"]
KW = dict(points_per_side=4, pred_iou_thresh=0.3, stability_score_thresh=0.3,
          box_nms_thresh=0.95)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    _, model = converted_pair("sam2.1_hiera_tiny", 256)
    root = tmp_path_factory.mktemp("everything")
    save_model(model, root / "model")
    images = root / "images"
    images.mkdir()
    pics = {"a.jpg": sample_image(120, 160), "b.png": sample_image(150, 100, seed=1)}
    for name, pic in pics.items():
        Image.fromarray(pic).save(images / name, quality=95)
    (images / "notes.txt").write_text("not an image")
    return root, model, pics


def _check_outputs(out, stem, image, records):
    hw = image.shape[:2]
    doc = json.loads((out / f"{stem}.json").read_text())
    assert doc["image"]["height"] == hw[0] and doc["image"]["width"] == hw[1]
    anns = doc["annotations"]
    assert len(anns) == len(records) > 0
    labels = outputs.read_label_png(out / f"{stem}.png")
    assert labels.shape == hw
    painted = np.zeros(hw, np.int64)
    for i in sorted(range(len(records)), key=lambda i: -records[i]["area"]):
        painted[rle.decode(records[i]["segmentation"])] = i + 1
    np.testing.assert_array_equal(labels, painted)
    for k, (ann, rec) in enumerate(zip(anns, records)):
        assert ann["id"] == k + 1
        assert ann["segmentation"] == rec["segmentation"]
        for key in ("area", "bbox", "predicted_iou", "stability_score", "point_coords",
                    "crop_box"):
            assert ann[key] == rec[key], key
    with Image.open(out / f"{stem}_overlay.png") as im:
        assert im.size == (hw[1], hw[0])


def test_one_image_and_a_folder(setup, tmp_path, capsys):
    root, model, pics = setup
    gen = SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **KW)
    decoded = {n: np.asarray(Image.open(root / "images" / n).convert("RGB")) for n in pics}
    expected = {n: gen.generate(decoded[n]) for n in pics}

    out = tmp_path / "one"
    argv = ["segment", str(root / "images" / "a.jpg"), "--everything", "--out", str(out),
            "--model", str(root / "model"), *FLAGS]
    assert main(argv) == 0
    assert f"a.jpg: {len(expected['a.jpg'])} masks" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_overlay.png"]
    _check_outputs(out, "a", decoded["a.jpg"], expected["a.jpg"])

    out = tmp_path / "all"
    argv = ["segment", str(root / "images"), "--everything", "--out", str(out),
            "--model", str(root / "model"), *FLAGS]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "2/2" in captured.err  # the progress bar
    assert "2 images" in captured.out
    for name in pics:
        _check_outputs(out, name.split(".")[0], decoded[name], expected[name])


@pytest.mark.parametrize("extra,words", [
    (["--point", "10,10"], "leave out --point"),
    (["--all"], "--all and --overlay"),
    (["--points-per-side", "0"], "must be positive"),
])
def test_bad_flags_are_one_line_errors(setup, tmp_path, capsys, extra, words):
    root, _, _ = setup
    argv = ["segment", str(root / "images" / "a.jpg"), "--everything", "--out",
            str(tmp_path / "o"), "--model", str(root / "model"), *FLAGS, *extra]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_bad_paths(setup, tmp_path, capsys):
    root, _, _ = setup
    empty = tmp_path / "empty"
    empty.mkdir()
    for image, out, words in [(empty, tmp_path / "o", "holds no images"),
                              (tmp_path / "missing.jpg", tmp_path / "o", "does not exist"),
                              (root / "images" / "a.jpg", tmp_path / "x.png", "is a folder")]:
        argv = ["segment", str(image), "--everything", "--out", str(out),
                "--model", str(root / "model"), *FLAGS]
        assert main(argv) != 0
        assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_more_than_255_masks_make_a_16_bit_label_png(tmp_path):
    from samv2_jax.app.everything import write_outputs

    image = np.zeros((20, 30, 3), np.uint8)
    records = []
    for i in range(300):
        mask = np.zeros((20, 30), bool)
        mask.flat[i] = True
        records.append({"segmentation": mask, "area": 1, "bbox": [0.0] * 4,
                        "predicted_iou": 0.9, "stability_score": 0.9,
                        "point_coords": [[0.0, 0.0]], "crop_box": [0.0, 0.0, 30.0, 20.0]})
    write_outputs(tmp_path, "many", image, records, "many.png")
    labels = np.asarray(Image.open(tmp_path / "many.png"))
    assert labels.max() == 300 and labels.flat[299] == 300 and labels.flat[300:].max() == 0
    doc = json.loads((tmp_path / "many.json").read_text())
    assert len(doc["annotations"]) == 300
    assert rle.decode(doc["annotations"][7]["segmentation"]).flat[7]
