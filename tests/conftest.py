import contextlib
import functools
import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import official  # noqa: E402

official.install_torchvision_standin()
# The official predictor warns when its CUDA connected-components extension is missing.
warnings.filterwarnings("ignore", message=".*Skipping the post-processing step.*")
warnings.filterwarnings("ignore", message=".*cannot import name '_C' from 'sam2'.*")


@functools.lru_cache(maxsize=4)
def converted_pair(name: str, image_size: int, seed: int = 0):
    """(official torch model, our Model) holding the same randomly re-drawn tensors."""
    from samv2_jax.weights.official import convert_state_dict
    from samv2_jax.weights.store import Model

    torch_model = official.build_official(name, image_size, seed)
    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=image_size)
    return torch_model, Model(config=cfg, params=params)


def sample_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB picture with real structure (scikit-image's astronaut when available,
    else smooth shapes), resized to h x w."""
    from PIL import Image

    try:
        from skimage import data

        base = data.astronaut()
    except Exception:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:512, 0:512]
        base = np.zeros((512, 512, 3), np.float64)
        for _ in range(12):
            cy, cx, r = rng.uniform(0, 512, 2).tolist() + [rng.uniform(30, 140)]
            color = rng.uniform(0, 255, 3)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            base[inside] = color
        base += rng.normal(0, 8, base.shape)
        base = np.clip(base, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))


@pytest.fixture(autouse=True, scope="module")
def _release_models_after_each_module(request):
    """Each module builds its own models (up to hiera large, ~1 GB per copy on each side);
    keeping them all for the whole session grew the test process past 10 GB. Release them,
    and JAX's compiled programs, when a module is done, and hand the freed heap back."""
    yield
    import ctypes
    import gc

    import jax

    for value in vars(request.module).values():  # the module's own cached models
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()
    converted_pair.cache_clear()
    official.clear_caches()
    jax.clear_caches()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.fixture
def image_factory():
    return sample_image
