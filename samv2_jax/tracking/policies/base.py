"""What a memory policy is: the protocol every policy follows and the selection it returns."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import flax.struct
import jax

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank


@flax.struct.dataclass
class MemorySelection:
    """The memories one frame attends to, as slots of a bank (per object).

    mem_*: spatial memories; mem_tpos is the official temporal position (0 for prompted
    frames, 1..num_maskmem-1 for recent ones, larger = closer). ptr_*: object pointers with
    their temporal distance to the current frame; ptr_scale normalises those distances.
    """

    mem_slots: jax.Array   # [O, S] int32
    mem_tpos: jax.Array    # [O, S] int32
    mem_valid: jax.Array   # [O, S] bool
    ptr_slots: jax.Array   # [O, P] int32
    ptr_dist: jax.Array    # [O, P] float32
    ptr_valid: jax.Array   # [O, P] bool
    ptr_scale: jax.Array   # [] float32


@runtime_checkable
class MemoryPolicy(Protocol):
    """Chooses which memories of the bank a frame attends to.

    A policy is a frozen (hashable) dataclass: its fields are static settings, so it can be a
    static argument of the jit-compiled step, and two equal policies share one compiled
    program (a new instance with the same settings does not recompile).

    `select` runs inside the traced step: `frame_idx`, `reverse` and `num_frames` may be
    traced; `max_cond` is static, the number of prompted-frame slots the selection has room
    for (the caller keeps it >= the prompted frames in use).
    """

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        ...
