"""samv2_jax.io.rle against pycocotools and the official generator's own RLE helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samv2_jax.io import rle

mask_api = pytest.importorskip("pycocotools.mask")


def _masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (33, 17), (61, 97), (2, 300), (300, 2)]:
        yield rng.random(shape) < 0.3
        yield rng.random(shape) < 0.97
        yield np.zeros(shape, bool)
        yield np.ones(shape, bool)
    blob = np.zeros((129, 65), bool)
    blob[20:100, 10:50] = True
    yield blob
    for top, bottom in [(0, 50), (30, 129), (0, 129)]:  # boxes touching the image edges
        m = np.zeros((129, 65), bool)
        m[top:bottom, 5:60] = rng.random((bottom - top, 55)) < 0.6
        m[top, 7] = m[bottom - 1, 58] = True
        yield m
    yield np.zeros((0, 3), bool)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2
def test_encode_matches_pycocotools_and_the_official_helpers():
    from sam2.utils.amg import area_from_rle, mask_to_rle_pytorch, rle_to_mask

    for mask in _masks():
        ours = rle.encode(mask)
        assert ours["size"] == list(mask.shape)
        assert all(type(c) is int for c in ours["counts"])
        if mask.size:
            assert ours == mask_to_rle_pytorch(torch.from_numpy(mask[None]))[0]
            np.testing.assert_array_equal(rle_to_mask(ours), mask)
            assert rle.area(ours) == area_from_rle(ours) == int(mask.sum())
        theirs = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        coco = rle.compress(ours)
        assert coco == {"size": list(mask.shape), "counts": theirs["counts"].decode()}
        for form in (ours, coco, {"size": coco["size"], "counts": coco["counts"].encode()}):
            back = rle.decode(form)
            assert back.dtype == bool and back.shape == mask.shape
            np.testing.assert_array_equal(back, mask)
        if mask.any():
            x, y, w, h = mask_api.toBbox(theirs).tolist()  # COCO: width = pixel extent
            assert rle.box(ours) == rle.box(coco) == [x, y, x + w - 1, y + h - 1]
        else:
            assert rle.box(ours) is None


def test_a_stack_and_an_offset_mask_encode_as_their_padded_masks():
    rng = np.random.default_rng(1)
    stack = rng.random((5, 40, 30)) < 0.2
    stack[1] = False
    stack[2, :, 3:9] = True  # full-height columns
    encoded = rle.encode(stack)
    assert encoded == [rle.encode(m) for m in stack]
    for (x, y), (hh, ww) in [((0, 0), (70, 50)), ((7, 0), (40, 41)), ((3, 30), (70, 33)),
                             ((20, 12), (52, 50)), ((0, 30), (70, 30))]:
        big = np.zeros((len(stack), hh, ww), bool)
        big[:, y:y + 40, x:x + 30] = stack
        assert rle.encode(stack, offset=(x, y), size=(hh, ww)) == rle.encode(big)
    with pytest.raises(ValueError, match="do not fit"):
        rle.encode(stack, offset=(25, 0), size=(40, 50))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        rle.encode(np.zeros((2, 2, 2, 2), bool))


def test_counts_string_round_trip_and_known_values():
    rng = np.random.default_rng(2)
    for _ in range(20):
        counts = rng.integers(0, 2**31 - 1, rng.integers(1, 40)).tolist()
        counts[:3] = rng.integers(0, 5, min(3, len(counts))).tolist()[:len(counts[:3])]
        s = rle.counts_to_string(counts)
        assert rle.string_to_counts(s) == counts
        # pycocotools reads the same string back to the same runs
        h = int(sum(counts))
        if 0 < h < 2**31:
            got = mask_api.frPyObjects({"size": [h, 1], "counts": counts}, h, 1)
            assert got["counts"].decode() == s
    assert rle.counts_to_string([35]) == "S1"
    assert rle.counts_to_string([0, 35]) == "0S1"
    assert rle.counts_to_string([]) == "" and rle.string_to_counts("") == []
    for bad, msg in [("S", "truncated"), ("S\x7f", "invalid character"), ("é", "non-ASCII")]:
        with pytest.raises(ValueError, match=msg):
            rle.string_to_counts(bad)
    with pytest.raises(ValueError, match="sum to"):
        rle.decode({"size": [7, 5], "counts": [3, 4]})
    with pytest.raises(ValueError, match="size"):
        rle.area({"counts": [3]})
