"""Independent checks of the torchvision stand-in in tests/official.py.

The official SAM 2 preprocessing is only reachable through it, so it is checked here against
PIL and plain arithmetic rather than against the torch calls it is built from.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from samv2_jax.modeling.transforms import preprocess_image  # noqa: E402

import official  # noqa: E402

official.install_torchvision_standin()
from torchvision.transforms import Normalize, Resize, ToTensor  # noqa: E402

torch.set_num_threads(1)


def _u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_install_is_idempotent():
    import torchvision.transforms as tvt

    official.install_torchvision_standin()
    assert sys.modules["torchvision.transforms"] is tvt
    assert tvt.Resize is Resize


@pytest.mark.parametrize("src,dst", [((97, 131), (40, 50)), ((300, 200), (128, 128)),
                                     ((64, 64), (17, 29)), ((1200, 1800), (256, 256)),
                                     ((10, 10), (1, 1)), ((20, 30), (47, 61))])
def test_resize_matches_pil_bilinear(src, dst):
    # PIL's BILINEAR is antialiased when shrinking; that is the filter torchvision's
    # Resize(antialias=True) reproduces.
    a = np.random.default_rng(src[0]).random(src, dtype=np.float32)
    im = Image.fromarray(a)
    assert im.mode == "F"
    pil = np.asarray(im.resize((dst[1], dst[0]), Image.Resampling.BILINEAR))
    ours = Resize(dst)(torch.from_numpy(a)[None])
    assert tuple(ours.shape) == (1,) + dst
    assert np.abs(ours[0].numpy() - pil).max() <= 1e-5


def test_resize_multichannel_is_per_channel():
    a = np.random.default_rng(1).random((3, 50, 70), dtype=np.float32)
    out = Resize((20, 33))(torch.from_numpy(a)).numpy()
    for c in range(3):
        pil = np.asarray(Image.fromarray(a[c]).resize((33, 20), Image.Resampling.BILINEAR))
        assert np.abs(out[c] - pil).max() <= 1e-5


def test_to_tensor_numpy():
    img = _u8((5, 7, 3))
    t = ToTensor()(img)
    assert t.dtype == torch.float32 and tuple(t.shape) == (3, 5, 7)
    np.testing.assert_array_equal(t.numpy(), img.transpose(2, 0, 1).astype(np.float32) / 255)
    gray = _u8((5, 7), seed=1)
    tg = ToTensor()(gray)
    assert tuple(tg.shape) == (1, 5, 7)
    np.testing.assert_array_equal(tg.numpy()[0], gray.astype(np.float32) / 255)
    assert ToTensor()(img).max() <= 1.0


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1), ("RGBA", 4)])
def test_to_tensor_pil(mode, channels):
    im = Image.fromarray(_u8((6, 4, 3), seed=2)).convert(mode)
    t = ToTensor()(im)
    assert tuple(t.shape) == (channels, 6, 4)
    arr = np.asarray(im).reshape(6, 4, channels)
    np.testing.assert_array_equal(t.numpy(), arr.transpose(2, 0, 1).astype(np.float32) / 255)


def test_normalize_matches_arithmetic():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = np.random.default_rng(3).random((3, 9, 11), dtype=np.float32)
    out = Normalize(mean, std)(torch.from_numpy(x)).numpy()
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    np.testing.assert_allclose(out, (x - m) / s, rtol=0, atol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("hw", [(120, 180), (256, 256), (300, 200), (57, 911)])
def test_official_sam2_transforms_equals_preprocess_image(hw):
    from sam2.utils.transforms import SAM2Transforms

    tf = SAM2Transforms(resolution=256, mask_threshold=0.0)
    img = _u8(hw + (3,), seed=hw[1])
    official_out = tf(img)
    assert isinstance(official_out, torch.Tensor)
    assert tuple(official_out.shape) == (3, 256, 256)
    ours = np.asarray(preprocess_image(img, 256)).transpose(2, 0, 1)
    assert np.abs(official_out.numpy() - ours).max() <= 1e-5

    # The PIL route through the official code lands on the same tensor.
    from_pil = tf(Image.fromarray(img))
    np.testing.assert_array_equal(from_pil.numpy(), official_out.numpy())


def test_official_forward_batch():
    from sam2.utils.transforms import SAM2Transforms

    tf = SAM2Transforms(resolution=64, mask_threshold=0.0)
    imgs = [_u8((40, 50, 3), seed=4), _u8((80, 30, 3), seed=5)]
    batch = tf.forward_batch(imgs)
    assert tuple(batch.shape) == (2, 3, 64, 64)
    for i, img in enumerate(imgs):
        ours = np.asarray(preprocess_image(img, 64)).transpose(2, 0, 1)
        assert np.abs(batch[i].numpy() - ours).max() <= 1e-5
