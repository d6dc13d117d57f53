"""DAM4SAM equivalence with the reference implementation, on stored reference outputs.

tests/data/dam4sam_reference.npz comes from scripts/reference/dam4sam.py, which runs
jovanavidenovic/DAM4SAM's own tracker (`DAM4SAMTracker.initialize` with a mask, then `track`
frame by frame: its SAM 2.1 fork with the RAM / DRM memory and its DRM admission test) on
the sam2.1 tiny model of its `sam21pp_hiera_t.yaml` at 256, every tensor re-drawn as
tests/official.py does, on the distractor video of mem_videos.py. CI cannot reach that
repository (and it has no licence: only its outputs are kept here); rerun the script on a
local copy to regenerate the file. The weights are changed as mem_videos.dam4sam_weights_
says, so that the admission rule admits frames and the target vanishes on some frames. Masks
are stored as the model's low-resolution logits and upsampled here as the reference does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mem_videos
import numpy as np

from samv2_jax.tracking.policies import Dam4SamPolicy
from samv2_jax.tracking.policies.dam4sam import vot_box_overlap
from samv2_jax.tracking.policies.samurai import mask_boxes

import official
import video_scripts as vs

DATA = Path(__file__).resolve().parents[2] / "data"


def _reference():
    return np.load(DATA / "dam4sam_reference.npz")


def test_box_overlap_is_the_vot_toolkits():
    """The admission rule's box overlap against VOT's own `calculate_overlaps` of the masks'
    rectangles (stored by the reference script), flat and nested boxes included."""
    import jax.numpy as jnp

    ref = _reference()
    masks = np.unpackbits(ref["box_masks"], axis=-1).astype(np.float32)
    boxes = mask_boxes(jnp.asarray(masks))
    got = np.asarray(vot_box_overlap(boxes[:, 0], boxes[:, 1]))
    np.testing.assert_allclose(got, ref["box_overlap"], rtol=1e-6, atol=1e-7)
    assert (ref["box_overlap"] == 1).any() and (ref["box_overlap"] < 0.7).any()


def _video_masks(low_res, hw):
    import torch

    up = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(low_res))[:, None],
                                         size=tuple(int(x) for x in hw), mode="bilinear",
                                         align_corners=False)
    return up[:, 0].numpy()


def test_dam4sam_matches_the_reference(monkeypatch):
    import samv2_jax.predictors.video as video

    ref = _reference()
    h, w = (int(x) for x in ref["video_hw"])
    t = ref["low_res"].shape[0]
    np.testing.assert_array_equal(ref["shifts"], [mem_videos.DAM4SAM_OBJ_SHIFT,
                                                  mem_videos.DAM4SAM_IOU_SHIFT,
                                                  mem_videos.DAM4SAM_LOGIT_SHIFT])
    frames, prompt = mem_videos.distractor_video(t, h, w)
    np.testing.assert_array_equal(np.unpackbits(ref["prompt_bits"])[:h * w].reshape(h, w),
                                  prompt)
    theirs = official.official_video_predictor("sam2.1_hiera_tiny", 256, fill_hole_area=0)
    mem_videos.dam4sam_weights_(theirs)
    # the same re-drawn weights as the reference run
    sums = np.array([float(v.double().abs().sum()) for v in theirs.state_dict().values()])
    np.testing.assert_allclose(sums, ref["checksum"], rtol=1e-12)
    pred = vs.ours_for(theirs, fill_hole_area=0, policy=Dam4SamPolicy())

    # what every tracked frame attends to: the policy's selection on the bank the step reads
    seen = {}
    step = video.track_image_step_inplace

    def recording(params, cfg, bank, image, frame_idx, *args, **kw):
        sel = kw["policy"].select(cfg, bank, frame_idx, reverse=kw["reverse"],
                                  num_frames=kw["num_frames"], max_cond=kw["max_cond"])
        fi = np.asarray(bank.frame_idx[0])
        nm = cfg.memory.num_maskmem
        mem = sorted((int(fi[s]), int(nm - 1 - p)) for s, p, v in zip(
            np.asarray(sel.mem_slots[0]), np.asarray(sel.mem_tpos[0]),
            np.asarray(sel.mem_valid[0])) if v)
        ptr = sorted(int(fi[s]) for s, v in zip(np.asarray(sel.ptr_slots[0]),
                                                np.asarray(sel.ptr_valid[0])) if v)
        seen[int(frame_idx)] = (mem, ptr)
        return step(params, cfg, bank, image, frame_idx, *args, **kw)

    monkeypatch.setattr(video, "track_image_step_inplace", recording)
    with tempfile.TemporaryDirectory() as tmp:
        state = pred.init_state(vs.write_jpeg_folder(frames, Path(tmp) / "f"))
        pred.add_new_mask(state, 0, 0, prompt)
        masks = {f: m[0, 0] for f, _, m in pred.propagate_in_video(state)}
    bank = state["bank"]
    want = _video_masks(np.nan_to_num(ref["low_res"]), (h, w))
    bits = np.unpackbits(ref["video_bits"], axis=-1)[:, :h * w].reshape(t, h, w).astype(bool)

    worst = 0.0
    for f in range(1, t):
        # the same mask (its logits, and the binary mask the tracker returned)
        worst = max(worst, official.rel_err(masks[f], want[f]))
        assert vs.mask_iou(masks[f] > 0, bits[f]) >= 0.999, f
    assert worst <= 1e-3, worst
    # the same chosen-mask IoU and low-resolution area, which the memory rules read
    np.testing.assert_allclose(np.asarray(bank.iou[0, 1:t]), ref["iou"][1:], rtol=1e-3,
                               atol=1e-4)
    np.testing.assert_array_equal(np.asarray(bank.area[0, 1:t]).astype(int), ref["area"][1:])
    # the same frames admitted into the distractor-resolving memory
    drm = np.asarray(bank.policy_state["drm_frame"][0])
    admitted = np.zeros(t, bool)
    admitted[drm[drm >= 0]] = True
    np.testing.assert_array_equal(admitted, ref["admitted"])
    # the same memories (frame, temporal encoding) and pointers on every frame
    for f in range(1, t):
        mem_ref = sorted(tuple(int(v) for v in x) for x in ref["memories"][f] if x[0] >= 0)
        ptr_ref = sorted(int(x) for x in ref["pointers"][f] if x != -1)
        mem, ptr = seen[f]
        assert mem == mem_ref, (f, mem, mem_ref)
        if -2 in ptr_ref:  # pointers two frames share cannot be told apart: count them
            assert len(ptr) == len(ptr_ref), (f, ptr, ptr_ref)
        else:
            assert ptr == ptr_ref, (f, ptr, ptr_ref)
    # the rule admitted frames (whose memories later frames attended to as prompts), and the
    # target vanished on some frames (which the recent memory and the pointers skip)
    assert ref["admitted"].sum() >= 2 and (ref["area"][1:] == 0).any()


def test_a_streaming_bank_forgets_admitted_memories_it_can_no_longer_attend():
    """On a long stream the policy keeps admitting frames; those beyond the `drm_size` newest
    and out of the pointer window are forgotten, so the fixed-size bank keeps its room."""
    from samv2_jax import Model, StreamingTracker
    from samv2_jax.weights.official import convert_state_dict

    theirs = official.official_video_predictor("sam2.1_hiera_tiny", 256, fill_hole_area=0)
    mem_videos.dam4sam_weights_(theirs)
    sd = {k: v.detach().cpu().numpy() for k, v in theirs.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=256)
    frames, prompt = mem_videos.distractor_video(60)
    policy = Dam4SamPolicy()
    tracker = StreamingTracker(Model(cfg, params), policy=policy, fill_hole_area=0)
    tracker.track(frames[0], {1: {"mask": prompt}})
    admitted = set()
    window = cfg.memory.max_obj_ptrs_in_encoder - 1
    for f in range(1, len(frames)):
        tracker.track(frames[f])
        b = tracker.bank
        drm = np.asarray(b.policy_state["drm_frame"][0])
        admitted |= {int(x) for x in drm[drm >= 0]}
        kept = np.asarray(b.frame_idx[0])[np.asarray(b.valid & b.is_cond)[0]]
        held = sorted(int(x) for x in kept if x in admitted)
        # every admitted frame is held while it can still be attended, and only then
        want = sorted(a for a in admitted
                      if sorted(admitted, reverse=True).index(a) < policy.drm_size
                      or f - a < window)
        assert held == want, (f, held, want)
        assert 0 in kept  # the user's prompt stays
    assert len(admitted) >= 5 and len(held) <= policy.drm_size
