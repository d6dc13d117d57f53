"""SAM2Long: a training-free memory tree (Ding et al., 2024, "SAM2Long: Enhancing SAM 2 for
Long Video Segmentation with a Training-Free Memory Tree"). Written from the paper and from
observing the reference's behaviour (Mark12Ding/SAM2Long is CC-BY-NC; none of its code is
used).

Each object keeps `pathways` hypotheses, rows of the bank stepped together in one batched
call (the image is encoded once; each pathway runs its own memory attention and decoder).
Every pathway proposes its multimask candidates, scored by the pathway's cumulative log IoU
plus the candidate's; the best `pathways` candidates survive. When the object score is
uncertain (no pathway's |score| above `uncertainty`), survivors must differ in their
presence-signed IoU (rounded to 2 decimals), and pathways left out are then filled in with
their own best candidate. A pathway's memories attended are its own lineage's: the
surviving rows share the memories of their ancestors through a per-slot lineage index
instead of copying them. Memory selection is gated (IoU above `iou_threshold`, a positive
object score), as SAMURAI's, with the pointers at their rank in the list; each memory's keys
are weighted by the rank of its object score, between 0.95 and 1.05.

On the first tracked frame of an object every pathway takes the official best mask (score
0). Each object's output is its best pathway at that frame; the reference instead returns,
after the last frame, the lineage of the final best pathway (`final_masks` recovers it).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from samv2_jax.config import SAM2Config
from samv2_jax.tracking.bank import MemoryBank
from samv2_jax.tracking.policies.base import (
    Candidates,
    MaskChoice,
    MemorySelection,
    PolicyBase,
    WriteDecision,
)
from samv2_jax.tracking.policies.gated import (
    gated_recent,
    gated_spatial,
    prompted_and_others,
    ranked_pointers,
)

_PROMPT_SCORE = 10.0  # the weight-rank score of prompted memories


def rank_weights(scores, valid, low: float = 0.95, high: float = 1.05):
    """[R, N] -> per-item factors from low to high by ascending score among the valid items
    (ties by position); rows with one valid item get 1."""
    n = valid.sum(1, keepdims=True)
    s = jnp.where(valid, scores, jnp.inf)
    i = jnp.arange(scores.shape[1])
    below = (s[:, None, :] < s[:, :, None]) | ((s[:, None, :] == s[:, :, None])
                                               & (i[None, None, :] < i[None, :, None]))
    rank = (below & valid[:, None, :]).sum(-1)
    w = low + (high - low) * rank / jnp.maximum(n - 1, 1)
    return jnp.where(n > 1, w, 1.0).astype(jnp.float32)


def prune(acc, ious, obj, num_keep: int, uncertainty: float):
    """SAM2Long's pathway pruning for one group of candidates (per object).

    acc [O, P] cumulative scores, ious [O, P, M], obj [O, P] object score logits. Returns
    (parent [O, K], index [O, K], score [O, K]) for K = num_keep survivors, best first.
    """
    o, p, m = ious.shape
    score = (acc[:, :, None] + jnp.log(ious + 1e-5)).reshape(o, p * m)
    signed = jnp.where(obj[:, :, None] > 0, ious, -ious).reshape(o, p * m)
    rounded = jnp.round(signed * 100).astype(jnp.int32)
    order = jnp.argsort(-score, axis=1, stable=True)
    certain = jnp.abs(obj).max(1) > uncertainty

    # uncertain: distinct rounded signed IoUs, in score order
    picked = jnp.full((o, num_keep), -1, jnp.int32)
    count = jnp.zeros((o,), jnp.int32)
    rows = jnp.arange(o)
    for k in range(p * m):
        c = order[:, k]
        val = rounded[rows, c]
        seen = ((picked >= 0) & (jnp.take_along_axis(rounded, jnp.maximum(picked, 0), 1)
                                 == val[:, None])).any(1)
        take = ~seen & (count < num_keep)
        picked = jnp.where(take[:, None] & (jnp.arange(num_keep)[None] == count[:, None]),
                           c[:, None], picked)
        count = count + take
    # then each pathway not yet represented adds its best candidate
    rep = ((picked[:, :, None] >= 0) & (picked[:, :, None] // m == jnp.arange(p)[None, None])
           ).any(1)
    best_of = jnp.argmax(score.reshape(o, p, m), axis=-1)  # first maximum: the sort's order
    for q in range(p):
        take = ~rep[:, q] & (count < num_keep)
        c = q * m + best_of[:, q]
        picked = jnp.where(take[:, None] & (jnp.arange(num_keep)[None] == count[:, None]),
                           c[:, None], picked)
        count = count + take
    chosen = jnp.where(certain[:, None], order[:, :num_keep], picked)
    chosen = jnp.maximum(chosen, 0)
    return chosen // m, chosen % m, jnp.take_along_axis(score, chosen, 1)


@dataclasses.dataclass(frozen=True)
class Sam2LongPolicy(PolicyBase):
    """SAM2Long with its published settings (num_pathway 3, iou_thre 0.1, uncertainty 2)."""

    pathways: int = 3
    iou_threshold: float = 0.1
    uncertainty: float = 2.0
    weight_range: tuple[float, float] = (0.95, 1.05)
    history: int = 32

    def recent_frames(self, cfg: SAM2Config) -> int:
        return max(super().recent_frames(cfg), self.history)

    def init_state(self, cfg: SAM2Config, num_rows: int, capacity: int):
        return {"lineage": jnp.zeros((num_rows, capacity), jnp.int32),
                "acc": jnp.zeros((num_rows,), jnp.float32),
                "parent": jnp.arange(num_rows, dtype=jnp.int32) % self.pathways,
                "pending_acc": jnp.zeros((num_rows,), jnp.float32)}

    def _sources(self, bank: MemoryBank):
        """[R, C]: the row holding each slot's memory for each row's lineage."""
        group = (jnp.arange(bank.num_rows) // self.pathways * self.pathways)[:, None]
        return group + bank.policy_state["lineage"]

    def select(self, cfg: SAM2Config, bank: MemoryBank, frame_idx, *, reverse, num_frames,
               max_cond: int) -> MemorySelection:
        m = cfg.memory
        f = jnp.asarray(frame_idx, jnp.int32)
        reverse = jnp.asarray(reverse, bool)
        num_frames = jnp.asarray(num_frames, jnp.int32)
        src = self._sources(bank)
        cols = jnp.arange(bank.capacity)[None]
        iou = bank.iou[src, cols]
        score = bank.object_score[src, cols]
        cond_slots, cond_valid, others = prompted_and_others(cfg, bank, f, max_cond)
        passes = (iou > self.iou_threshold) & (score > 0)
        max_len = m.max_obj_ptrs_in_encoder - 1
        limit = jnp.minimum(num_frames, m.max_obj_ptrs_in_encoder) - 1
        slots, exists, length = gated_recent(cfg, bank, f, reverse, passes, limit, max_len,
                                             others)
        mem_slots, mem_tpos, mem_valid = gated_spatial(cfg, slots, exists, length, cond_slots,
                                                       cond_valid)
        ptr_slots, ptr_dist, ptr_valid, scale = ranked_pointers(
            cfg, bank, f, reverse, num_frames, slots, exists, length, cond_slots, cond_valid)
        own = jnp.arange(bank.num_rows)[:, None]
        nc = cond_slots.shape[1]
        mem_rows = jnp.concatenate(
            [jnp.broadcast_to(own, cond_slots.shape),
             jnp.take_along_axis(src, mem_slots[:, nc:], 1)], 1)
        ptr_rows = jnp.concatenate(
            [jnp.broadcast_to(own, cond_slots.shape),
             jnp.take_along_axis(src, ptr_slots[:, nc:], 1)], 1)
        mem_score = jnp.where(mem_tpos == 0, _PROMPT_SCORE, score[own, mem_slots])
        ptr_score = jnp.concatenate(
            [jnp.full(cond_slots.shape, _PROMPT_SCORE),
             jnp.take_along_axis(score, ptr_slots[:, nc:], 1)], 1)
        lo, hi = self.weight_range
        mem_w = rank_weights(mem_score, mem_valid, lo, hi)
        ptr_w = rank_weights(ptr_score, ptr_valid, lo, hi)
        # with a single memory frame nothing is re-weighted, pointers included
        ptr_w = jnp.where(mem_valid.sum(1, keepdims=True) > 1, ptr_w, 1.0)
        return MemorySelection(mem_slots, mem_tpos, mem_valid, ptr_slots, ptr_dist, ptr_valid,
                               scale, mem_rows=mem_rows, ptr_rows=ptr_rows, mem_weight=mem_w,
                               ptr_weight=ptr_w)

    def choose_mask(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, frame_idx, *,
                    reverse):
        st = bank.policy_state
        p = self.pathways
        o = bank.num_objects
        r = bank.num_rows
        ious = cand.ious.reshape(o, p, -1)
        obj = cand.object_score.reshape(o, p)
        parent, index, score = prune(st["acc"].reshape(o, p), ious, obj, p, self.uncertainty)
        parent = (parent + (jnp.arange(o) * p)[:, None]).reshape(r)
        index, score = index.reshape(r), score.reshape(r)
        # an object without tracked memories yet: every pathway takes the official best
        fresh = ~(bank.valid & ~bank.is_cond).any(1)
        own = jnp.arange(r, dtype=jnp.int32)
        parent = jnp.where(fresh, own, parent).astype(jnp.int32)
        index = jnp.where(fresh, jnp.argmax(cand.ious, -1), index).astype(jnp.int32)
        score = jnp.where(fresh, 0.0, score)
        # (kept within the object, so an object's state does not depend on its row)
        state = dict(st, parent=parent % p, pending_acc=score)
        return MaskChoice(index, parent), bank.replace(policy_state=state)

    def decide_write(self, cfg: SAM2Config, bank: MemoryBank, cand: Candidates, out: dict,
                     frame_idx, slot, write):
        st = bank.policy_state
        r = bank.num_rows
        own = jnp.arange(r, dtype=jnp.int32)
        parent = jnp.where(write, own // self.pathways * self.pathways + st["parent"], own)
        lineage = st["lineage"][parent]
        within = (own % self.pathways).astype(jnp.int32)
        lineage = lineage.at[own, slot].set(jnp.where(write, within, lineage[own, slot]))
        acc = jnp.where(write, st["pending_acc"], st["acc"])
        state = dict(st, lineage=lineage, acc=acc)
        return WriteDecision(slot, write), bank.replace(policy_state=state)


def final_masks(per_frame_masks, lineages, slots, pathways: int):
    """The reference's answer after the last frame: the masks of the final best pathway's
    lineage. per_frame_masks: [T, O * P, ...] every row's mask per frame (`out["pathways"]`);
    lineages: the final bank's `policy_state["lineage"]` [O * P, C]; slots: [T] the slot
    frame t was written to. Returns [T, O, ...]."""
    masks = np.asarray(per_frame_masks)
    lineage = np.asarray(lineages)
    o = lineage.shape[0] // pathways
    out = []
    for t, s in enumerate(np.asarray(slots)):
        rows = [k * pathways + lineage[k * pathways, s] for k in range(o)]
        out.append(masks[t, rows])
    return np.stack(out)
