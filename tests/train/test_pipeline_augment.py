"""Augmentations against the official `training/dataset/transforms.py` with the MOSE recipe's
parameters: on the same random parameters the official pipeline must give the same pixels and
masks; our own draws must follow the official distributions.

torchvision is not installed here: `pipeline_tv_standin.py` gives the official code the
torchvision pieces it imports, and the first tests check those against direct computations.
(During development they were also compared with torchvision 0.29.1's own functions, with its
compiled operators stubbed out: zero differing pixels over 50 random cases of each function.)
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_tv_standin as tv  # noqa: E402

from samv2_jax.train.data import augment as A  # noqa: E402
from samv2_jax.train.data import synthetic  # noqa: E402

tv.install()
from training.dataset import transforms as OT  # noqa: E402
from training.utils.data_utils import Frame, Object, VideoDatapoint  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# --- the stand-in against direct computations -------------------------------------------------


def test_standin_mask_affine_is_the_inverse_map_nearest():
    rng = np.random.default_rng(0)
    m = (rng.random((37, 53)) < 0.4).astype(np.uint8)
    # a quarter turn of a square image is a rotation of the array (torchvision's convention:
    # the centre at (w/2, h/2); +90 degrees turns the array as np.rot90(k=-1))
    sq = (rng.random((20, 20)) < 0.5).astype(np.uint8)
    out = tv.affine(torch.from_numpy(sq)[None], 90.0, (0, 0), 1.0, (0.0, 0.0),
                    interpolation=tv.InterpolationMode.NEAREST, fill=0.0)[0].numpy()
    np.testing.assert_array_equal(out, np.rot90(sq, -1))
    # general angle and shear: each output pixel takes the input pixel nearest to the inverse
    # map of its centre (computed here in float64), zero outside
    angle, shear = 17.3, -11.2
    out = tv.affine(torch.from_numpy(m)[None], angle, (0, 0), 1.0, (shear, 0.0),
                    interpolation=tv.InterpolationMode.NEAREST, fill=0.0)[0].numpy()
    h, w = m.shape
    inv = np.asarray(A.inverse_affine_matrix((0.0, 0.0), angle, (shear, 0.0))).reshape(2, 3)
    ys, xs = np.mgrid[:h, :w] + 0.5
    sx = inv[0, 0] * (xs - w / 2) + inv[0, 1] * (ys - h / 2) + inv[0, 2] + w / 2 - 0.5
    sy = inv[1, 0] * (xs - w / 2) + inv[1, 1] * (ys - h / 2) + inv[1, 2] + h / 2 - 0.5
    ix, iy = np.rint(sx).astype(int), np.rint(sy).astype(int)
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    direct = np.where(ok, m[np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)], 0)
    near_tie = (np.abs(sx - np.floor(sx) - 0.5) < 1e-4) | (np.abs(sy - np.floor(sy) - 0.5) < 1e-4)
    assert np.array_equal(out[~near_tie], direct[~near_tie])


def test_standin_mask_resize_is_the_triangle_filter():
    rng = np.random.default_rng(1)
    m = (rng.random((30, 47)) < 0.5).astype(np.uint8)
    out = tv.resize(torch.from_numpy(m)[None, None], (64, 64))[0, 0].numpy()
    # upsampling: plain bilinear with half-pixel centres, rounded
    def lin(n_in, n_out):
        x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        x0 = np.clip(np.floor(x), 0, n_in - 1).astype(int)
        x1 = np.minimum(x0 + 1, n_in - 1)
        f = np.clip(x - x0, 0, 1)
        wmat = np.zeros((n_out, n_in))
        wmat[np.arange(n_out), x0] += 1 - f
        wmat[np.arange(n_out), x1] += f
        return wmat
    direct = lin(30, 64) @ m.astype(float) @ lin(47, 64).T
    assert np.array_equal(out, np.rint(direct).astype(np.uint8))
    # the PIL path is PIL's own resize, and colour ops are PIL's ImageEnhance
    img = Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(tv.resize(img, (5, 7))),
                          np.asarray(img.resize((7, 5), Image.BILINEAR)))


# --- same parameters, same output ------------------------------------------------------------


def _official_recipe(size):
    return OT.ComposeAPI([
        OT.RandomHorizontalFlip(consistent_transform=True),
        OT.RandomAffine(degrees=25, shear=20, image_interpolation="bilinear",
                        consistent_transform=True),
        OT.RandomResizeAPI(sizes=size, square=True, consistent_transform=True),
        OT.ColorJitter(consistent_transform=True, brightness=0.1, contrast=0.03,
                       saturation=0.03, hue=None),
        OT.RandomGrayscale(p=0.05, consistent_transform=True),
        OT.ColorJitter(consistent_transform=False, brightness=0.1, contrast=0.05,
                       saturation=0.05, hue=None),
        OT.ToTensorAPI(),
        OT.NormalizeAPI(mean=MEAN, std=STD),
    ])


class _Scripted:
    """`random` for the official transforms, answering with our drawn parameters."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)

    def choice(self, seq):
        return seq[0]


def _run_official(frames, masks, params, size, monkeypatch):
    jitters = [params["clip_jitter"], *params["frame_jitter"]]

    def jitter_params(b, c, s, h):
        order, fb, fc, fs, fh = jitters.pop(0)
        return torch.tensor(order), fb, fc, fs, fh

    angle, shear = params["affine"]
    monkeypatch.setattr(OT, "random", _Scripted(
        [0.0 if params["hflip"] else 0.99, 0.0 if params["grayscale"] else 0.99]))
    monkeypatch.setattr(OT.T.ColorJitter, "get_params", staticmethod(jitter_params))
    monkeypatch.setattr(OT.T.RandomAffine, "get_params",
                        staticmethod(lambda *a, **k: (angle, (0, 0), 1.0, (shear, 0.0))))
    dp = VideoDatapoint(frames=[
        Frame(data=Image.fromarray(f), objects=[
            Object(object_id=o, frame_index=t, segment=torch.from_numpy(masks[t, o]))
            for o in range(masks.shape[1])]) for t, f in enumerate(frames)],
        video_id=0, size=frames.shape[1:3])
    out = _official_recipe(size)(dp)
    images = torch.stack([f.data for f in out.frames]).numpy()
    seg = np.stack([np.stack([o.segment.numpy() for o in f.objects]) for f in out.frames])
    return images, seg


CASES = [  # (seed, height, width, size, forced parameters)
    (0, 90, 120, 64, {}),
    (1, 60, 80, 128, {"hflip": True}),
    (2, 75, 100, 96, {"grayscale": True, "hflip": False}),
    (3, 64, 64, 64, {}),
    (4, 120, 90, 48, {"affine": (25.0, -20.0)}),
]


@pytest.mark.parametrize("seed,h,w,size,forced", CASES)
def test_same_parameters_same_clip_as_official(seed, h, w, size, forced, monkeypatch):
    rng = np.random.default_rng(seed)
    frames, labels = synthetic.moving_objects_video(rng, 3, h, w, 2)
    masks = np.stack([labels == 1, labels == 2], 1).astype(np.uint8)
    cfg = A.AugmentConfig()
    params = {**A.draw_params(rng, cfg, len(frames)), **forced}
    pil = [Image.fromarray(f) for f in frames]
    ours, our_masks, affined = A.apply_params(pil, masks, params, cfg, size)
    theirs, their_masks = _run_official(frames, masks, params, size, monkeypatch)
    np.testing.assert_array_equal(A.normalize_images(ours), theirs.transpose(0, 2, 3, 1))
    # masks: equal, except where a shrink puts exactly half the filter on the object (a tie
    # that float rounding decides); those pixels are counted and must be rare
    diff = our_masks != their_masks.astype(bool)
    if diff.any():
        t, o = masks.shape[:2]
        src = masks
        if params["hflip"]:
            src = src[..., ::-1]
        if affined:
            src = np.stack([[A.affine_mask(np.ascontiguousarray(src[i, k]), params["affine"][0],
                                           (params["affine"][1], 0.0)) for k in range(o)]
                            for i in range(t)])
        values = A.resize_mask_values(src.reshape(t * o, h, w), size).reshape(diff.shape)
        assert np.all(np.abs(values[diff] - 0.5) < 1e-6), values[diff][:5]
        assert diff.mean() < 1e-3


def test_affine_skipped_when_a_first_frame_mask_would_vanish(monkeypatch):
    rng = np.random.default_rng(7)
    frames, _ = synthetic.moving_objects_video(rng, 2, 40, 60, 1)
    masks = np.zeros((2, 1, 40, 60), np.uint8)
    masks[:, 0, 0, 0] = 1  # a one-pixel object in the corner: a 25 degree turn moves it out
    cfg = A.AugmentConfig()
    params = {**A.draw_params(rng, cfg, 2), "affine": (25.0, 0.0), "hflip": False}
    pil = [Image.fromarray(f) for f in frames]
    ours, our_masks, affined = A.apply_params(pil, masks, params, cfg, 40)
    assert not affined
    theirs, their_masks = _run_official(frames, masks, params, 40, monkeypatch)
    np.testing.assert_array_equal(A.normalize_images(ours), theirs.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(our_masks, their_masks.astype(bool))


# --- our random draws follow the official distributions --------------------------------------


def test_drawn_parameters_follow_the_official_distributions():
    n = 4000
    rng = np.random.default_rng(0)
    cfg = A.AugmentConfig()
    draws = [A.draw_params(rng, cfg, 2) for _ in range(n)]
    # what the official classes ask for: record the arguments they give torchvision
    asked = {}
    affine = OT.RandomAffine(degrees=25, shear=20, image_interpolation="bilinear",
                             consistent_transform=True)
    clip = OT.ColorJitter(True, brightness=0.1, contrast=0.03, saturation=0.03, hue=None)
    frame = OT.ColorJitter(False, brightness=0.1, contrast=0.05, saturation=0.05, hue=None)
    asked["degrees"], asked["shear"] = affine.degrees, affine.shear
    asked["fill"] = affine.fill_img
    asked["clip"] = (clip.brightness, clip.contrast, clip.saturation, clip.hue)
    asked["frame"] = (frame.brightness, frame.contrast, frame.saturation, frame.hue)
    assert list(asked["degrees"]) == [-25, 25] and list(asked["shear"]) == [-20, 20]
    assert tuple(asked["fill"]) == cfg.affine_fill
    for ours, theirs in ((cfg.clip_jitter, asked["clip"]), (cfg.frame_jitter, asked["frame"])):
        mine = ours.ranges()
        assert mine[3] is None and theirs[3] is None  # no hue jitter in the recipe
        np.testing.assert_allclose(np.asarray(mine[:3]), np.asarray(theirs[:3]), rtol=1e-12)
    # flip and grayscale rates: the official compares random.random() with p
    random.seed(0)
    off_flip = np.mean([random.random() < OT.RandomHorizontalFlip(True).p for _ in range(n)])
    off_gray = np.mean([random.random() < OT.RandomGrayscale(True, p=0.05).p for _ in range(n)])
    se = lambda p: 4 * np.sqrt(p * (1 - p) / n)
    flip = np.mean([d["hflip"] for d in draws])
    gray = np.mean([d["grayscale"] for d in draws])
    assert abs(flip - off_flip) < 2 * se(0.5) and abs(gray - off_gray) < 2 * se(0.05)
    # angle, shear and factors: uniform over the asked ranges (moments of a uniform)
    torch.manual_seed(0)
    off = [tv.RandomAffine.get_params(affine.degrees, None, None, affine.shear, [10, 10])
           for _ in range(n)]
    for ours, theirs, (lo, hi) in (
            ([d["affine"][0] for d in draws], [o[0] for o in off], (-25, 25)),
            ([d["affine"][1] for d in draws], [o[3][0] for o in off], (-20, 20))):
        for x in (np.asarray(ours), np.asarray(theirs)):
            assert lo <= x.min() and x.max() <= hi
            assert abs(x.mean() - (lo + hi) / 2) < 4 * (hi - lo) / np.sqrt(12 * n)
            assert abs(x.std() - (hi - lo) / np.sqrt(12)) < 0.03 * (hi - lo)
    b = np.asarray([d["clip_jitter"][1] for d in draws])
    assert b.min() >= 0.9 and b.max() <= 1.1 and abs(b.mean() - 1) < 0.005
    # the order of the four colour operations: every permutation, each about 1/24
    orders = [d["frame_jitter"][0][0] for d in draws]
    counts = np.unique(np.asarray(orders), axis=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > n / 24 * 0.6
    # per-frame jitters are independent draws
    assert np.mean([d["frame_jitter"][0][1] != d["frame_jitter"][1][1] for d in draws]) == 1.0
