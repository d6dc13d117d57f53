"""Memory policies: which memories a frame attends to.

A policy follows `MemoryPolicy` (a hashable frozen dataclass with a `select` method);
`OfficialPolicy` reproduces the official choice and is the default everywhere. Its pieces
(`closest_prompted`, `select_spatial`, `select_pointers`) are public for policies that change
one part and keep the rest.
"""

from samv2_jax.tracking.policies.base import MemoryPolicy, MemorySelection
from samv2_jax.tracking.policies.official import (
                                                  OfficialPolicy,
                                                  closest_prompted,
                                                  select_pointers,
                                                  select_spatial,
)

__all__ = ["MemoryPolicy", "MemorySelection", "OfficialPolicy", "closest_prompted",
           "select_pointers", "select_spatial"]
