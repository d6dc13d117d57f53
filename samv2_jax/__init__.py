"""samv2_jax: SAM 2 / SAM 2.1 in JAX, pure functions over official checkpoints' parameters."""

from samv2_jax.config import PRESETS, SAM2Config, get_config
from samv2_jax.predictors.image import SAM2ImagePredictor
from samv2_jax.predictors.streaming import Prompt, StreamingTracker
from samv2_jax.predictors.video import SAM2VideoPredictor
from samv2_jax.tracking.bank import MemoryBank
from samv2_jax.weights.store import Model, load, save_model

__all__ = ["Model", "load", "save_model", "PRESETS", "SAM2Config", "get_config",
           "SAM2ImagePredictor", "SAM2VideoPredictor", "StreamingTracker", "Prompt", "MemoryBank"]
__version__ = "0.1.0"
