"""The stand-ins of amg_standins.py against direct implementations written here from the
documented behaviour (torchvision's greedy NMS; 8-connected components; OpenCV's labelling
in raster order with per-label stats), not from the stand-ins' own code."""

from __future__ import annotations

import amg_standins as sa
import numpy as np
import pytest
import torch


def greedy_nms(boxes, scores, thr):
    """Plain-loop NMS in float32: visit by descending score (earlier index first on ties)."""
    boxes = np.asarray(boxes, np.float32)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        ok = True
        for j in kept:
            w = max(np.float32(0), min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(np.float32(0), min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = np.float32(w * h)
            ai = np.float32((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
            aj = np.float32((boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1]))
            if np.float32(inter / np.float32(ai + aj - inter)) > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def random_boxes(n, rng, span=100):
    xy = rng.integers(0, span, (n, 2))
    wh = rng.integers(0, span // 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 40, 1500])
def test_batched_nms_is_greedy_nms_per_category(n):
    rng = np.random.default_rng(n)
    boxes = random_boxes(n, rng)
    scores = rng.integers(0, 20, n).astype(np.float32) / 20  # many ties
    cats = rng.integers(0, 3, n)
    keep = sa.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                          torch.from_numpy(cats), 0.5).numpy()
    assert keep.dtype == np.int64
    expected = []
    for c in range(3):
        idx = np.flatnonzero(cats == c)
        expected += idx[greedy_nms(boxes[idx], scores[idx], 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert np.all(np.diff(scores[keep]) <= 0)  # descending score
    if n <= 1000:  # one NMS: ties in index order, as torchvision's stable sort
        one = sa.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist()
        assert one == greedy_nms(boxes, scores, 0.5)


def test_box_area():
    boxes = torch.tensor([[0.0, 0.0, 3.0, 2.0], [1.0, 1.0, 1.0, 5.0]])
    assert sa.box_area(boxes).tolist() == [6.0, 0.0]


def flood_labels(mask):
    """8-connected components by breadth-first search, numbered in raster order of their
    first pixel -> (labels, areas per pixel)."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int64)
    sizes = [0]
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                lab = len(sizes)
                labels[y, x] = lab
                todo, count = [(y, x)], 0
                while todo:
                    cy, cx = todo.pop()
                    count += 1
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                                labels[ny, nx] = lab
                                todo.append((ny, nx))
                sizes.append(count)
    return labels, np.asarray(sizes)[labels] * (labels > 0)


def _masks():
    rng = np.random.default_rng(3)
    out = [rng.random((23, 31)) < p for p in (0.2, 0.45, 0.6)]
    snake = np.zeros((15, 15), bool)
    snake[1::4, 1:14] = True
    snake[1:14, 13] = snake[3:6, 1] = True
    return out + [snake, np.zeros((4, 5), bool), np.ones((4, 5), bool)]


def test_cuda_kernel_standin_matches_flood_fill():
    masks = _masks()[:3]
    batch = torch.from_numpy(np.stack(masks)[:, None].astype(np.uint8))
    labels, areas = sa.get_connected_componnets(batch)
    assert labels.shape == areas.shape == batch.shape and labels.dtype == torch.int32
    for i, m in enumerate(masks):
        ref_labels, ref_areas = flood_labels(m)
        np.testing.assert_array_equal(areas[i, 0].numpy(), ref_areas)
        np.testing.assert_array_equal(labels[i, 0].numpy() > 0, m)
        # the same partition: each of our labels is exactly one reference component
        pairs = {(a, b) for a, b in zip(labels[i, 0].numpy().ravel(), ref_labels.ravel())}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_opencv_standin_matches_flood_fill():
    for m in _masks():
        n, labels, stats, centroids = sa.connectedComponentsWithStats(m.astype(np.uint8), 8)
        ref, _ = flood_labels(m)
        np.testing.assert_array_equal(labels, ref)
        assert n == ref.max() + 1 and stats.shape == (n, 5) and centroids.shape == (n, 2)
        for k in range(n):
            ys, xs = np.nonzero(ref == k)
            if ys.size == 0:
                continue
            assert stats[k].tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                         ys.max() - ys.min() + 1, ys.size]
            np.testing.assert_allclose(centroids[k], [xs.mean(), ys.mean()])
    with pytest.raises(ValueError):
        sa.connectedComponentsWithStats(np.zeros((3, 3), np.uint8), 6)


def test_standins_are_removed_after_the_block():
    import sys

    names = ("cv2", "sam2._C", "torchvision.ops", "torchvision.ops.boxes")
    before = {name: sys.modules.get(name) for name in names}
    with sa.official_amg_standins():
        import cv2
        from torchvision.ops.boxes import batched_nms
        assert callable(batched_nms) and callable(cv2.connectedComponentsWithStats)
    assert {name: sys.modules.get(name) for name in names} == before
