"""samv2_jax: SAM 2 / SAM 2.1 in JAX, pure functions over official checkpoints' parameters.

The public names below are imported on first use, so `import samv2_jax` (and the `samv2`
command's start, or `--help`) does not pay for JAX until something needs it.
"""

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "Model": "samv2_jax.weights.store",
    "load": "samv2_jax.weights.store",
    "save_model": "samv2_jax.weights.store",
    "PRESETS": "samv2_jax.config",
    "SAM2Config": "samv2_jax.config",
    "get_config": "samv2_jax.config",
    "SAM2ImagePredictor": "samv2_jax.predictors.image",
    "SAM2VideoPredictor": "samv2_jax.predictors.video",
    "SAM2AutomaticMaskGenerator": "samv2_jax.automatic.generator",
    "StreamingTracker": "samv2_jax.predictors.streaming",
    "Prompt": "samv2_jax.predictors.inputs",
    "MemoryBank": "samv2_jax.tracking.bank",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'samv2_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
