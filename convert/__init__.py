"""Official SAM 2 / SAM 2.1 PyTorch checkpoints -> samv2-jax model directories.

The user-facing converter: `python -m convert CHECKPOINT.pt OUT_DIR` (the same as
`samv2 convert`). The reading and mapping code lives in `samv2_jax.weights`, so the library
never imports this top-level package.
"""

from samv2_jax.weights.official import convert_checkpoint, convert_state_dict, read_state_dict

__all__ = ["convert_checkpoint", "convert_state_dict", "read_state_dict"]
