"""Official SAM 2 / SAM 2.1 PyTorch checkpoints -> samv2-jax params (the only torch user)."""

from convert.checkpoint import convert_checkpoint, convert_state_dict, read_state_dict

__all__ = ["convert_checkpoint", "convert_state_dict", "read_state_dict"]
