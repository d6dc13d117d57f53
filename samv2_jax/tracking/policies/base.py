"""What a memory policy is: the protocol every policy follows, the selection it returns, and
the defaults that reproduce the official model.

A policy decides four things on every tracked frame, each inside the jit-compiled step:

1. `select`: which memories of the bank the frame attends to (slots, their temporal
   positions, optionally other rows to read them from and a weight per memory);
2. `choose_mask`: which of the decoder's multimask candidates becomes the frame's mask (and,
   for policies with several pathways per object, which row's candidate each row continues);
3. `decide_write`: whether and where the frame's memory is written, and whether it is kept
   as a prompted ("conditioning") memory;
4. its own per-row state (`init_state`), carried in the bank (`MemoryBank.policy_state`),
   updated by `choose_mask` and `decide_write`.

`PolicyBase` gives the official behaviour for every part a policy does not change.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import flax.struct
import jax
import jax.numpy as jnp

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank


@flax.struct.dataclass
class MemorySelection:
    """The memories one frame attends to, as slots of a bank (per row).

    mem_*: spatial memories; mem_tpos is the official temporal position (0 for prompted
    frames, 1..num_maskmem-1 for recent ones, larger = closer). ptr_*: object pointers with
    their temporal distance to the current frame; ptr_scale normalises those distances.
    mem_rows / ptr_rows (optional): the bank row each memory is read from (default: the row
    itself), for policies whose rows share memories. mem_weight / ptr_weight (optional): a
    factor on each memory's attention keys (SAM2Long's object-score weighting).
    """

    mem_slots: jax.Array   # [O, S] int32
    mem_tpos: jax.Array    # [O, S] int32
    mem_valid: jax.Array   # [O, S] bool
    ptr_slots: jax.Array   # [O, P] int32
    ptr_dist: jax.Array    # [O, P] float32
    ptr_valid: jax.Array   # [O, P] bool
    ptr_scale: jax.Array   # [] float32 (or [O])
    mem_rows: jax.Array | None = None    # [O, S] int32
    ptr_rows: jax.Array | None = None    # [O, P] int32
    mem_weight: jax.Array | None = None  # [O, S] float32
    ptr_weight: jax.Array | None = None  # [O, P] float32

    def rows(self, idx) -> MemorySelection:
        """The selection of some rows only (e.g. each object's lead pathway)."""
        return jax.tree.map(lambda x: x[idx] if x.ndim else x, self)


@flax.struct.dataclass
class Candidates:
    """What the SAM heads produced on a frame, per row, before a mask is chosen.

    masks [R, M, h, w] low-resolution logits (absent objects already at NO_OBJ_SCORE),
    high_res [R, M, S, S] the same at the model's input size, ious [R, M], tokens [R, T, C]
    the decoder's output tokens (T = M when each mask has its own token), object_score
    [R, 1].
    """

    masks: jax.Array
    high_res: jax.Array
    ious: jax.Array
    tokens: jax.Array
    object_score: jax.Array


@flax.struct.dataclass
class MaskChoice:
    """Per row: the candidate `index` taken from row `parent` (None: the row's own)."""

    index: jax.Array             # [R] int32
    parent: jax.Array | None = None  # [R] int32


@flax.struct.dataclass
class WriteDecision:
    """Where each row's memory of this frame goes: `slot` [R], written where `write` [R];
    `as_prompt` [R] rows store it as a prompted memory (encoded from the binarised mask, as
    the official encodes a frame the user interacted with)."""

    slot: jax.Array
    write: jax.Array
    as_prompt: jax.Array | None = None  # None: no row stores a prompt


@runtime_checkable
class MemoryPolicy(Protocol):
    """Chooses which memories a frame attends to (and, optionally, the rest listed above).

    A policy is a frozen (hashable) dataclass: its fields are static settings, so it can be a
    static argument of the jit-compiled step, and two equal policies share one compiled
    program (a new instance with the same settings does not recompile).

    `select` runs inside the traced step: `frame_idx`, `reverse` and `num_frames` may be
    traced; `max_cond` is static, the number of prompted-frame slots the selection has room
    for (the caller keeps it >= the prompted frames in use). Policies that subclass
    `PolicyBase` get the official version of every other method.
    """

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        ...


class PolicyBase:
    """The official defaults for every decision but `select` (mixed into policies)."""

    #: rows per object in the bank (SAM2Long keeps several hypotheses)
    pathways: int = 1
    #: threshold on the object score logit above which the object counts as present
    presence_threshold: float = 0.0

    def init_state(self, cfg: SAM2Config, num_rows: int, capacity: int) -> Any:
        """The per-row state of a new bank (None: the policy keeps none)."""
        return None

    def recent_frames(self, cfg: SAM2Config) -> int:
        """How many recent frames a streaming bank must keep for this policy."""
        m = cfg.memory
        return max((m.num_maskmem - 2) * m.memory_temporal_stride_for_eval + 1,
                   m.max_obj_ptrs_in_encoder - 1 if m.use_obj_ptrs_in_encoder else 0)

    def max_prompted(self) -> int | None:
        """How many prompted memories a row keeps when the policy itself adds them (None:
        the policy adds none)."""
        return None

    def for_video(self, video_hw: tuple[int, int]):
        """This policy for a video of the given size (policies that decide at the video's
        resolution fill it in; the others return themselves)."""
        return self

    def choose_mask(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, frame_idx, *,
                    reverse) -> tuple[MaskChoice, MemoryBank]:
        """The official choice: the candidate with the highest predicted IoU."""
        return MaskChoice(jnp.argmax(cand.ious, axis=-1).astype(jnp.int32)), bank

    def decide_write(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, out: dict,
                     frame_idx, slot, write) -> tuple[WriteDecision, MemoryBank]:
        """The official decision: every tracked frame's memory at the slot the caller gave."""
        return WriteDecision(slot, write, None), bank


def rows_per_object(bank: MemoryBank, x):
    """[R, ...] -> [O, P, ...]: a row array grouped by object."""
    return x.reshape(bank.num_objects, bank.pathways, *x.shape[1:])
