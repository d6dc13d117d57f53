"""Segment everything: the automatic mask generator (`SAM2AutomaticMaskGenerator`)."""

from samv2_jax.automatic.generator import SAM2AutomaticMaskGenerator

__all__ = ["SAM2AutomaticMaskGenerator"]
