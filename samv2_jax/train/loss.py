"""The official training loss (`MultiStepMultiMasksAndIous`). Work in progress."""

from __future__ import annotations


def loss_fn(params, batch, key, *, model_cfg, train_cfg):
    """-> (loss, aux); see the package docstring."""
    raise NotImplementedError("loss_fn: being built (issue 12)")
