"""Memory selection parity: `OfficialPolicy` picks the same memories as the official SAM 2.

The oracle is the official `SAM2Base._prepare_memory_conditioned_features` run as is. Every
stored memory carries its own frame number in its values; the official memory attention is
replaced by a stub that keeps what it is given; the temporal encodings are made readable
(one constant per temporal position; pointer encodings equal to the normalised distance).
From those tensors we read back which (frame, temporal position) spatial memories and which
(frame, normalised distance) object pointers the official chose, and compare with our
selection on a bank holding the same frames (in shuffled slots, beside forgotten entries).
Frame numbers travel through float32 tensors, so scenarios stay far below 2**24.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from samv2_jax.config import get_config
from samv2_jax.tracking.bank import empty_bank, forget, write
from samv2_jax.tracking.policies import OfficialPolicy

import official

MODEL = "sam2.1_hiera_tiny"
SIZE = 64               # the selection does not depend on it; small keeps the build fast
E = SIZE // 16          # memory side: E*E tokens per spatial memory
CAPACITY = 128          # fixed, so the jitted write compiles once
NUM_OBJECTS = 2         # each object gets its own frames and its own official run
STREAM = 2**30          # "unknown length", as the streaming tracker passes it

# The selection options, under the same names on the official model and in our MemoryConfig.
OPTION_NAMES = ("num_maskmem", "memory_temporal_stride_for_eval", "max_cond_frames_in_attn",
                "max_obj_ptrs_in_encoder", "only_obj_ptrs_in_the_past_for_eval",
                "use_signed_tpos_enc_to_obj_ptrs", "use_obj_ptrs_in_encoder")

# name -> (option overrides, kind of video: normal length, shorter than the pointer window,
# or an open-ended stream far from frame 0).
COMBOS = {
    "default": ({}, "normal"),
    "stride2": (dict(memory_temporal_stride_for_eval=2), "normal"),
    "stride3": (dict(memory_temporal_stride_for_eval=3), "normal"),
    "stride3_maskmem4": (dict(memory_temporal_stride_for_eval=3, num_maskmem=4), "normal"),
    "cond1": (dict(max_cond_frames_in_attn=1), "normal"),
    "cond2": (dict(max_cond_frames_in_attn=2), "normal"),
    "cond3": (dict(max_cond_frames_in_attn=3), "normal"),
    "ptrs4": (dict(max_obj_ptrs_in_encoder=4), "normal"),
    "future_ptrs": (dict(only_obj_ptrs_in_the_past_for_eval=False), "normal"),
    "unsigned": (dict(use_signed_tpos_enc_to_obj_ptrs=False), "normal"),
    "no_ptrs": (dict(use_obj_ptrs_in_encoder=False), "normal"),
    "short_video": ({}, "short"),
    "stream": (dict(max_cond_frames_in_attn=2), "stream"),
    "mixed": (dict(memory_temporal_stride_for_eval=2, max_cond_frames_in_attn=2,
                   max_obj_ptrs_in_encoder=6, only_obj_ptrs_in_the_past_for_eval=False,
                   use_signed_tpos_enc_to_obj_ptrs=False), "normal"),
    "mixed_short": (dict(memory_temporal_stride_for_eval=3, max_cond_frames_in_attn=3,
                         max_obj_ptrs_in_encoder=8, num_maskmem=5,
                         use_signed_tpos_enc_to_obj_ptrs=False), "short"),
}
SEEDS = range(6)  # even seeds track forward, odd ones in reverse


class _CaptureAttention(torch.nn.Module):
    """Stands in for the official memory attention: keeps its memory inputs, returns zeros."""

    def forward(self, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=0):
        self.memory = memory.detach().clone()
        self.memory_pos = memory_pos.detach().clone()
        self.num_obj_ptr_tokens = int(num_obj_ptr_tokens)
        return torch.zeros_like(curr[-1])


class _FirstChannels(torch.nn.Module):
    """Replaces the pointer-encoding projection so the (readable) encoding passes through."""

    def __init__(self, width):
        super().__init__()
        self.width = width

    def forward(self, x):
        return x[..., : self.width]


def _distance_as_encoding(pos_inds, dim, temperature=10000):
    # Every channel holds the normalised distance itself instead of its sines.
    return pos_inds.float().unsqueeze(-1).expand(*pos_inds.shape, dim)


@pytest.fixture(scope="module")
def oracle():
    from sam2.modeling import sam2_base

    # A private copy: the cached official model is shared with other test modules.
    model = copy.deepcopy(official.build_official(MODEL, SIZE))
    model.memory_attention = _CaptureAttention()
    model.obj_ptr_tpos_proj = _FirstChannels(model.mem_dim)
    # The pointer encoding is only readable when it is added; it changes no selection.
    model.add_tpos_enc_to_obj_ptrs = True
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sam2_base, "get_1d_sine_pe", _distance_as_encoding)
        yield model


@pytest.fixture(scope="module")
def base_cfg():
    return get_config(MODEL, SIZE)


_write = jax.jit(write)


def _entry(model, frame):
    d, c = model.mem_dim, model.hidden_dim
    return {"maskmem_features": torch.full((1, d, E, E), float(frame)),
            "maskmem_pos_enc": [torch.zeros((1, d, E, E))],
            "obj_ptr": torch.full((1, c), float(frame))}


def official_choice(model, memory_cfg, frame, reverse, num_frames, cond, tracked):
    """Run the official selection; return (Counter of (frame, tpos), sorted [(frame, dist)])."""
    for name in OPTION_NAMES:
        setattr(model, name, getattr(memory_cfg, name))
    n, d = model.num_maskmem, model.mem_dim
    # Temporal encoding index k holds k + 1 everywhere (the spatial encoding is zero).
    tpos_enc = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 1, d)
    model.maskmem_tpos_enc = torch.nn.Parameter(tpos_enc.clone(), requires_grad=False)
    # Prompted frames in the order they were prompted: the official breaks exact distance
    # ties between them by that (dict) order.
    output_dict = {"cond_frame_outputs": {t: _entry(model, t) for t in cond},
                   "non_cond_frame_outputs": {t: _entry(model, t) for t in sorted(tracked)}}
    feats = [torch.zeros(E * E, 1, model.hidden_dim)]
    with torch.no_grad():
        model._prepare_memory_conditioned_features(
            frame_idx=frame, is_init_cond_frame=False, current_vision_feats=feats,
            current_vision_pos_embeds=feats, feat_sizes=[(E, E)], output_dict=output_dict,
            num_frames=num_frames, track_in_reverse=reverse)
    cap = model.memory_attention
    mem, pos = cap.memory[:, 0].numpy(), cap.memory_pos[:, 0].numpy()
    n_ptr = cap.num_obj_ptr_tokens
    n_spatial = mem.shape[0] - n_ptr

    # Spatial memories: blocks of E*E tokens, each block one frame at one temporal position.
    blocks, block_pos = mem[:n_spatial].reshape(-1, E * E, d), pos[:n_spatial].reshape(-1, E * E, d)
    assert n_spatial % (E * E) == 0
    assert (blocks == blocks[:, :1, :1]).all() and (block_pos == block_pos[:, :1, :1]).all()
    k = block_pos[:, 0, 0] - 1
    assert np.allclose(k, np.rint(k))
    mems = Counter(zip(blocks[:, 0, 0].astype(int).tolist(),
                       (n - 1 - np.rint(k).astype(int)).tolist()))

    # Pointers: each one split into hidden/mem_dim consecutive tokens of the same frame.
    split = model.hidden_dim // d
    assert n_ptr % split == 0
    ptr, ptr_pos = mem[n_spatial:].reshape(-1, split, d), pos[n_spatial:].reshape(-1, split, d)
    assert (ptr == ptr[:, :1, :1]).all() and (ptr_pos == ptr_pos[:, :1, :1]).all()
    ptrs = sorted(zip(ptr[:, 0, 0].astype(int).tolist(), ptr_pos[:, 0, 0].tolist()))
    return mems, ptrs


def build_bank(cfg, objects, rng):
    """Our bank with each object's prompted, tracked and forgotten frames in random slots,
    written in a random order except that the prompted frames come in their listed order."""
    e, d = cfg.embedding_size, cfg.memory.mem_dim
    rows = []
    for obj in objects:
        entries = ([(t, True, False) for t in obj["cond"]]
                   + [(t, False, False) for t in obj["tracked"]]
                   + [(t, bool(rng.random() < 0.5), True) for t in obj["stale"]])
        order = rng.permutation(len(entries))
        n_cond = len(obj["cond"])
        order[np.flatnonzero(order < n_cond)] = np.arange(n_cond)
        slots = rng.permutation(CAPACITY)[: len(entries)]
        rows.append([(int(slots[i]),) + entries[j] for i, j in enumerate(order)])
    bank = empty_bank(cfg, len(objects), CAPACITY)
    drop = np.zeros((len(objects), CAPACITY), bool)
    for i in range(max(len(r) for r in rows)):
        here = [r[i] if i < len(r) else (0, -1, False, False) for r in rows]
        slot = jnp.asarray([h[0] for h in here], jnp.int32)
        frame = np.asarray([h[1] for h in here], np.int32)
        value = frame.astype(np.float32)
        bank = _write(bank, slot,
                      jnp.broadcast_to(value[:, None, None, None], (len(rows), e, e, d)),
                      jnp.broadcast_to(value[:, None], (len(rows), cfg.hidden_dim)),
                      jnp.asarray(frame), jnp.asarray([h[2] for h in here]),
                      jnp.zeros((len(rows),), jnp.float32),
                      jnp.asarray([i < len(r) for r in rows]))
        for o, h in enumerate(here):
            drop[o, h[0]] |= h[3]
    return forget(bank, jnp.asarray(drop))


def our_choice(cfg, bank, frame, reverse, num_frames, max_cond):
    """Per object: (Counter of (frame, tpos), sorted [(frame, normalised distance)])."""
    sel = jax.device_get(OfficialPolicy().select(cfg, bank, frame, reverse=reverse,
                                                 num_frames=num_frames, max_cond=max_cond))
    fidx = np.asarray(bank.frame_idx)
    out = []
    for o in range(bank.num_objects):
        mems = Counter((int(fidx[o, s]), int(t)) for s, t, v in
                       zip(sel.mem_slots[o], sel.mem_tpos[o], sel.mem_valid[o]) if v)
        ptrs = sorted((int(fidx[o, s]), float(dist / sel.ptr_scale)) for s, dist, v in
                      zip(sel.ptr_slots[o], sel.ptr_dist[o], sel.ptr_valid[o]) if v)
        out.append((mems, ptrs))
    return out


def check_same_choice(oracle, base_cfg, options, frame, reverse, num_frames, objects, rng,
                      max_cond_extra=0):
    cfg = base_cfg.replace(memory=dataclasses.replace(base_cfg.memory, **options))
    bank = build_bank(cfg, objects, rng)
    max_cond = max(len(o["cond"]) for o in objects) + max_cond_extra
    ours = our_choice(cfg, bank, frame, reverse, num_frames, max_cond)
    for o, obj in enumerate(objects):
        mems, ptrs = official_choice(oracle, cfg.memory, frame, reverse, num_frames,
                                     obj["cond"], obj["tracked"])
        where = (f"object {o}: frame={frame} reverse={reverse} num_frames={num_frames} "
                 f"options={options} cond (in prompt order)={obj['cond']} "
                 f"tracked={sorted(obj['tracked'])} stale={sorted(obj['stale'])}")
        our_mems, our_ptrs = ours[o]
        assert our_mems == mems, (f"spatial memories differ for {where}: ours "
                                  f"{sorted(our_mems.elements())} vs official "
                                  f"{sorted(mems.elements())}")
        assert [f for f, _ in our_ptrs] == [f for f, _ in ptrs], (
            f"pointer frames differ for {where}: ours {our_ptrs} vs official {ptrs}")
        np.testing.assert_allclose([x for _, x in our_ptrs], [x for _, x in ptrs],
                                   rtol=1e-6, atol=1e-7, err_msg=f"pointer distances, {where}")


def _draw_objects(rng, frames, one_cond):
    """Split `frames` per object into prompted / tracked frames, plus forgotten slots (some
    holding a frame that is also live elsewhere in the bank, as after re-prompting)."""
    objects = []
    for _ in range(NUM_OBJECTS):
        p_cond, p_tracked = rng.uniform(0.05, 0.3), rng.uniform(0.3, 0.9)
        kind = rng.choice(3, size=len(frames), p=[p_cond, p_tracked * (1 - p_cond),
                                                   (1 - p_tracked) * (1 - p_cond)])
        cond, tracked = list(frames[kind == 0]), list(frames[kind == 1])
        if one_cond or not cond:  # the official needs a prompted frame; some runs want one
            keep = cond[int(rng.integers(len(cond)))] if cond else frames[rng.integers(len(frames))]
            tracked = sorted((set(tracked) | set(cond)) - {keep})
            cond = [keep]
        stale = list(frames[rng.random(len(frames)) < 0.15])
        cond = rng.permutation(cond)  # the order they were prompted in
        objects.append({"cond": [int(t) for t in cond], "tracked": [int(t) for t in tracked],
                        "stale": [int(t) for t in stale]})
    return objects


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("combo", COMBOS)
def test_random_scenarios_match_official(oracle, base_cfg, combo, seed):
    options, video = COMBOS[combo]
    rng = np.random.default_rng([seed, list(COMBOS).index(combo)])
    reverse = seed % 2 == 1
    if video == "stream":
        num_frames = STREAM
        frame = int(rng.integers(50, 5000))
        frames = np.arange(frame - 45, frame + 46)
    else:
        # "short": fewer frames than the 16 (or 8) pointers of the window.
        num_frames = int(rng.integers(2, 9) if video == "short" else rng.integers(12, 48))
        frame = int(rng.integers(num_frames))
        frames = np.arange(num_frames)
    # The official supports a limit of 1 only with a single prompted frame (it asserts >= 2).
    objects = _draw_objects(rng, frames, one_cond=options.get("max_cond_frames_in_attn") == 1)
    check_same_choice(oracle, base_cfg, options, frame, reverse, num_frames, objects, rng,
                      max_cond_extra=int(rng.integers(3)))


# Hand-picked corners; each object's frames are given explicitly.
EDGE_CASES = {
    # nothing before the first frame / after the last one
    "first_frame_forward": (dict(), 0, False, 10, [0, 5], [1, 2, 3]),
    "last_frame_reverse": (dict(), 9, True, 10, [9, 2], [8, 7, 6, 5]),
    # stride targets below frame 0 (forward) and past the end (reverse)
    "stride3_near_start": (dict(memory_temporal_stride_for_eval=3), 2, False, 20, [0], [1]),
    "stride3_near_end": (dict(memory_temporal_stride_for_eval=3), 17, True, 20, [19],
                         [18, 16, 15, 14, 12, 9]),
    # a two-frame video: the pointer distance is normalised by 1
    "two_frames": (dict(), 1, False, 2, [0], []),
    # the current frame itself prompted: it counts as the closest "after" frame
    "current_is_prompted": (dict(max_cond_frames_in_attn=2), 6, False, 12, [1, 6, 9],
                            [5, 4, 3]),
    # equal distances beyond the closest before/after: the frame prompted first is kept
    "distance_tie": (dict(max_cond_frames_in_attn=3), 15, False, 40, [5, 14, 16, 25],
                     [13, 12, 11]),
    "distance_tie_later_frame_prompted_first": (dict(max_cond_frames_in_attn=3), 15, False, 40,
                                                [25, 16, 5, 14], [13, 12, 11]),
    "distance_tie_reverse": (dict(max_cond_frames_in_attn=3), 15, True, 40,
                             [5, 14, 16, 25], [17, 18]),
    # an unselected prompted frame among the recent ones is used as a tracked memory
    "unselected_prompt_is_recent": (dict(max_cond_frames_in_attn=2), 20, False, 30,
                                    [0, 18, 19, 25], [17, 16]),
    # prompted frames in the future give no pointer unless allowed
    "future_prompt_past_only": (dict(), 4, False, 30, [2, 8], [3]),
    "future_prompt_allowed": (dict(only_obj_ptrs_in_the_past_for_eval=False), 4, False, 30,
                              [2, 8], [3]),
    "future_prompt_unsigned": (dict(only_obj_ptrs_in_the_past_for_eval=False,
                                    use_signed_tpos_enc_to_obj_ptrs=False), 4, True, 30,
                               [2, 8], [5, 6]),
    # all frames tracked: pointers stop at max_obj_ptrs_in_encoder - 1 frames back
    "pointer_window": (dict(max_obj_ptrs_in_encoder=5), 20, False, 30, [0],
                       list(range(1, 20))),
    "pointer_window_short": (dict(), 6, False, 7, [0], [1, 2, 3, 4, 5]),
    # hours into a stream, distances that differ by one frame still rank exactly
    "far_into_a_stream": (dict(max_cond_frames_in_attn=3), 600_000, False, STREAM,
                          [0, 599_999, 600_001, 1_199_999], [599_998]),
    "far_into_a_stream_reverse": (dict(max_cond_frames_in_attn=3), 2_000_000, True, STREAM,
                                  [1_000_000, 1_999_999, 2_000_001, 2_999_999], [2_000_002]),
}


@pytest.mark.parametrize("name", EDGE_CASES)
def test_edge_cases_match_official(oracle, base_cfg, name):
    options, frame, reverse, num_frames, cond, tracked = EDGE_CASES[name]
    # The same frames for both objects, but the second one's bank also holds forgotten slots.
    objects = [{"cond": cond, "tracked": tracked, "stale": []},
               {"cond": cond, "tracked": tracked, "stale": [frame - 1, frame + 1]}]
    objects[1]["stale"] = [t for t in objects[1]["stale"] if 0 <= t < num_frames]
    check_same_choice(oracle, base_cfg, options, frame, reverse, num_frames, objects,
                      np.random.default_rng(len(name)))


def test_prompt_order_is_kept_like_the_official_dict(base_cfg):
    """Re-prompting a prompted frame keeps its place; a frame demoted and prompted again, or
    written over by a tracked result, goes to the back; objects count separately."""
    e, d = base_cfg.embedding_size, base_cfg.memory.mem_dim
    bank = empty_bank(base_cfg, 2, 8)

    def put(bank, slot, frame, is_cond, where=None):
        return _write(bank, slot, jnp.zeros((2, e, e, d)), jnp.zeros((2, base_cfg.hidden_dim)),
                      frame, is_cond, jnp.zeros((2,)), where)

    def order(bank, obj):
        live = np.asarray(bank.valid[obj] & bank.is_cond[obj])
        ranks = np.asarray(bank.cond_order[obj])
        return [int(bank.frame_idx[obj, s]) for s in np.argsort(np.where(live, ranks, 1 << 30))
                if live[s]]

    for frame in (7, 3, 5):
        bank = put(bank, frame, frame, True)
    assert order(bank, 0) == order(bank, 1) == [7, 3, 5]
    bank = put(bank, 7, 7, True)                      # re-prompted: stays first
    assert order(bank, 0) == [7, 3, 5]
    only_first = jnp.asarray([True, False])
    bank = bank.replace(is_cond=bank.is_cond.at[0, 3].set(False))   # prompts cleared...
    bank = put(bank, 3, 3, True, only_first)          # ...and given again: now last
    assert order(bank, 0) == [7, 5, 3] and order(bank, 1) == [7, 3, 5]
    bank = put(bank, 5, 5, False, only_first)         # tracked over: no longer prompted
    bank = put(bank, 5, 5, True, only_first)
    assert order(bank, 0) == [7, 3, 5]
    bank = put(bank, 3, 4, True, only_first)          # another frame in the same slot
    assert order(bank, 0) == [7, 5, 4]


def test_config_defaults_are_the_official_ones(base_cfg):
    """The random scenarios vary options around our defaults; those must be the official's."""
    model = official.build_official(MODEL, SIZE)
    for name in OPTION_NAMES:
        assert getattr(base_cfg.memory, name) == getattr(model, name), name


def test_decoding_sees_a_changed_selection(oracle, base_cfg):
    """The read-back must notice a difference: a wider stride chooses other frames."""
    objects = [{"cond": [0], "tracked": list(range(1, 29)), "stale": []}]
    narrow = official_choice(oracle, base_cfg.memory, 29, False, 30, [0], range(1, 29))
    wide_cfg = dataclasses.replace(base_cfg.memory, memory_temporal_stride_for_eval=3)
    wide = official_choice(oracle, wide_cfg, 29, False, 30, [0], range(1, 29))
    assert narrow[0] != wide[0] and narrow[1] == wide[1]
    bank = build_bank(base_cfg, objects, np.random.default_rng(0))
    assert our_choice(base_cfg, bank, 29, False, 30, 1)[0][0] == narrow[0]


# --- a caller-supplied policy -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SameAsOfficial:
    """Returns the official selection and records each trace's max_cond."""
    calls = []  # a class attribute, not a field: the policy stays hashable

    def select(self, cfg, bank, frame_idx, *, reverse, num_frames, max_cond):
        self.calls.append(max_cond)
        return OfficialPolicy().select(cfg, bank, frame_idx, reverse=reverse,
                                       num_frames=num_frames, max_cond=max_cond)


@dataclasses.dataclass(frozen=True)
class _RecentOnly:
    """A parametrised policy: the official choice cut to the `keep` most recent spatial
    memories (prompted ones always stay) and no pointers beyond the prompted frames."""
    keep: int = 0
    traces = []

    def select(self, cfg, bank, frame_idx, *, reverse, num_frames, max_cond):
        self.traces.append(self.keep)
        sel = OfficialPolicy().select(cfg, bank, frame_idx, reverse=reverse,
                                      num_frames=num_frames, max_cond=max_cond)
        recent = sel.mem_tpos >= cfg.memory.num_maskmem - self.keep
        return sel.replace(mem_valid=sel.mem_valid & ((sel.mem_tpos == 0) | recent),
                           ptr_valid=sel.ptr_valid.at[:, 1:].set(False))


def test_track_step_uses_a_custom_policy():
    """`track_step` takes the selection policy as an argument: one returning the official
    selection changes nothing, one that keeps only the prompted memory changes the output;
    equal parametrised policies share one compiled step, a new parameter compiles anew."""
    from samv2_jax.modeling.image_encoder import encode_image
    from samv2_jax.tracking.step import track_step

    from conftest import converted_pair

    _, model = converted_pair(MODEL, SIZE)
    cfg, params = model.config, model.params
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda im: encode_image(params, cfg, im),
                            jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32))
    feats = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)

    bank = empty_bank(cfg, 1, 8)
    e, d = cfg.embedding_size, cfg.memory.mem_dim
    for t in range(4):
        bank = write(bank, t, rng.normal(size=(1, e, e, d)), rng.normal(size=(1, cfg.hidden_dim)),
                     t, t == 0, 1.0)

    def run(policy):
        out, _ = track_step(params, cfg, bank, feats, 4, jnp.asarray([4]), max_cond=1,
                            num_frames=10, policy=policy)
        # Scores, not masks or pointers: with re-drawn weights the object may come out absent,
        # which makes those constant.
        return np.concatenate([np.ravel(out["ious"]), np.ravel(out["object_score_logits"])])

    default = run(OfficialPolicy())
    np.testing.assert_array_equal(run(_SameAsOfficial()), default)
    assert _SameAsOfficial.calls == [1]  # called (once, while tracing) with the caller's max_cond
    assert np.abs(run(_RecentOnly(0)) - default).max() > 1e-3
    # A new instance with the same settings reuses the compiled step; new settings retrace.
    first = run(_RecentOnly(0))
    assert _RecentOnly.traces == [0]
    np.testing.assert_array_equal(run(_RecentOnly(0)), first)
    run(_RecentOnly(2))
    assert _RecentOnly.traces == [0, 2]
