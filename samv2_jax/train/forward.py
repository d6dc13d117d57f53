"""The training forward over a clip (official `SAM2Train.forward`). Work in progress."""

from __future__ import annotations


def forward_clip(params, model_cfg, train_cfg, batch, key, *, plan=None):
    """Official `SAM2Train.forward` on a clip; see the package docstring."""
    raise NotImplementedError("forward_clip: being built (issue 12)")
