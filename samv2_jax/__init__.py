"""samv2_jax: SAM 2 / SAM 2.1 in JAX, pure functions over official checkpoints' parameters."""

from .checkpoint import Model, load, save_model
from .config import PRESETS, SAM2Config, get_config
from .image_predictor import SAM2ImagePredictor

__all__ = ["Model", "load", "save_model", "PRESETS", "SAM2Config", "get_config",
           "SAM2ImagePredictor"]
__version__ = "0.1.0"
