"""Command-line prompt flags and prompts files."""

import json

import numpy as np
import pytest
from PIL import Image

from samv2_jax.app.prompt_files import PromptSet, add_file, add_flags


def test_flags_gather_per_frame_and_object(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[5:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    ps = add_flags(PromptSet(),
                   points=["0:10,20", "0:30.5,12:0", "3:1e1,5@2"],
                   boxes=["0:1,2,50,30", "3:0,0,10,10@4"],
                   masks=[f"5:{tmp_path / 'm.png'}@3"])
    assert ps.frames == [0, 3, 5] and ps.obj_ids == [1, 2, 3, 4]
    f0 = ps.for_frame(0)
    np.testing.assert_array_equal(f0[1].points, [[10, 20], [30.5, 12]])
    np.testing.assert_array_equal(f0[1].labels, [1, 0])
    assert f0[1].box == [1, 2, 50, 30]
    f3 = ps.for_frame(3)
    assert list(f3) == [2, 4] and f3[4].points.shape == (0, 2) and f3[4].box == [0, 0, 10, 10]
    np.testing.assert_array_equal(ps.for_frame(5)[3].mask, mask > 0)
    assert ps.for_frame(1) == {}
    ps.check(40, 60, 6)
    with pytest.raises(ValueError, match="frame 5 is past the end.*5 frames"):
        ps.check(40, 60, 5)
    with pytest.raises(ValueError, match=r"point \(30.5, 12\) is outside the 20x40"):
        ps.check(40, 20, None)


def test_a_palettized_mask_gives_one_object_per_value(tmp_path):
    ann = np.zeros((30, 30), np.uint8)
    ann[:10] = 2
    ann[20:] = 5
    im = Image.fromarray(ann, "P")
    im.putpalette([0, 0, 0] * 256)
    im.save(tmp_path / "ann.png")
    ps = add_flags(PromptSet(), masks=[f"0:{tmp_path / 'ann.png'}"])
    got = ps.for_frame(0)
    assert list(got) == [2, 5]
    np.testing.assert_array_equal(got[5].mask, ann == 5)
    # with @OBJ, that value of the palette only
    ps = add_flags(PromptSet(), masks=[f"0:{tmp_path / 'ann.png'}@2"])
    np.testing.assert_array_equal(ps.for_frame(0)[2].mask, ann == 2)
    with pytest.raises(ValueError, match="the mask is 30x30 but the video is 40x30"):
        ps.check(30, 40)


@pytest.mark.parametrize("flag,text,match", [
    ("points", "0:10", "FRAME:X,Y"),
    ("points", "a:1,2", "FRAME:X,Y"),
    ("points", "0:1,2:3", "label is 1"),
    ("points", "0:1,2@0", "object ids must be 1..255"),
    ("points", "0:1,2@300", "object ids must be 1..255"),
    ("boxes", "0:1,2,3", "FRAME:X0,Y0,X1,Y1"),
    ("boxes", "0:5,5,1,9", "X1 > X0"),
    ("masks", "0", "FRAME:PATH.png"),
])
def test_bad_flags(flag, text, match):
    with pytest.raises(ValueError, match=match):
        add_flags(PromptSet(), **{flag: [text]})


def test_mask_with_other_prompts_and_missing_files(tmp_path):
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match="a mask is used alone"):
        add_flags(PromptSet(), points=["0:1,1"], masks=[f"0:{tmp_path / 'm.png'}"])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        add_flags(PromptSet(), masks=[f"0:{tmp_path / 'nope.png'}"])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        add_flags(PromptSet(), masks=[f"0:{tmp_path / 'text.png'}"])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "zero.png")
    with pytest.raises(ValueError, match="no object pixels"):
        add_flags(PromptSet(), masks=[f"0:{tmp_path / 'zero.png'}"])


def test_prompts_file(tmp_path):
    Image.fromarray(np.full((8, 8), 1, np.uint8)).save(tmp_path / "m.png")
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"prompts": [
        {"frame": 0, "obj_id": 1, "points": [[1, 2], [3, 4]], "labels": [1, 0]},
        {"frame": 0, "obj_id": 1, "box": [0, 0, 5, 5]},
        {"frame": 4, "obj_id": 2, "mask": "m.png"},
        {"frame": 2, "points": [[5, 5]]},
    ]}))
    ps = add_file(PromptSet(), f)
    assert ps.frames == [0, 2, 4] and ps.obj_ids == [1, 2]
    assert ps.for_frame(0)[1].box == [0, 0, 5, 5]
    np.testing.assert_array_equal(ps.for_frame(0)[1].labels, [1, 0])
    np.testing.assert_array_equal(ps.for_frame(2)[1].labels, [1])
    assert ps.for_frame(4)[2].mask.all()

    for doc, match in [
        ("{", "not valid JSON"),
        ('{"prompts": 3}', "must hold a list"),
        ('[{"frame": 0, "points": [[1, 2]], "labels": [1, 1]}]', "1 points but 2 labels"),
        ('[{"frame": -1, "points": [[1, 2]]}]', "non-negative integer"),
        ('[{"points": [[1, 2]]}]', "missing 'frame'"),
        ('[{"frame": 0, "obj_id": 1, "point": [1, 2]}]', "unknown keys"),
        ('[{"frame": 0}]', "needs points, a box or a mask"),
        ('[{"frame": 0, "box": [1, 2, 3]}]', "box must be 4 numbers"),
    ]:
        f.write_text(doc)
        with pytest.raises(ValueError, match=match):
            add_file(PromptSet(), f)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        add_file(PromptSet(), tmp_path / "missing.json")
