"""samv2_jax: SAM 2 / SAM 2.1 in JAX, pure functions over official checkpoints' parameters."""

from .checkpoint import Model, load, save_model
from .config import PRESETS, SAM2Config, get_config
from .image_predictor import SAM2ImagePredictor
from .memory_bank import MemoryBank
from .streaming import Prompt, StreamingTracker
from .video_predictor import SAM2VideoPredictor

__all__ = ["Model", "load", "save_model", "PRESETS", "SAM2Config", "get_config",
           "SAM2ImagePredictor", "SAM2VideoPredictor", "StreamingTracker", "Prompt", "MemoryBank"]
__version__ = "0.1.0"
