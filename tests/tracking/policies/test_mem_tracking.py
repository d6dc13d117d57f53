"""The published policies in the tracking step: several objects in one batch equal each
object tracked alone, the step compiles once however the policy state evolves, the official
policy's outputs do not change with the protocol's hooks, and intermediates report what each
object attended to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samv2_jax.modeling.image_encoder import encode_image
from samv2_jax.tracking.bank import empty_bank, take_objects, write
from samv2_jax.tracking.policies import OfficialPolicy, policy_by_name
from samv2_jax.tracking.step import track_step

import video_scripts as vs
from conftest import converted_pair

MODEL, SIZE, T = "sam2.1_hiera_tiny", 256, 5


@pytest.fixture(scope="module")
def setup():
    _, model = converted_pair(MODEL, SIZE)
    cfg, params = model.config, model.params
    # the object present on every frame, so that masks, boxes and areas are real ones
    params = jax.tree.map(lambda x: x, params)
    head = params["sam_mask_decoder"]["pred_obj_score_head"]["layers"]["2"]
    head["bias"] = head["bias"] + vs.PRESENT
    frames = vs.make_frames(T, 150, 211)
    from samv2_jax.io.frames import preprocess_frame

    enc = jax.jit(lambda im: encode_image(params, cfg, im))
    feats = [enc(jnp.asarray(preprocess_frame(f, SIZE))[None]) for f in frames]
    return cfg, params, feats


def _prompted(cfg, policy, feats, num_objects, rng):
    bank = empty_bank(cfg, num_objects, 8, policy=policy)
    e, d = cfg.embedding_size, cfg.memory.mem_dim
    r = bank.num_rows
    mem = np.repeat(rng.normal(size=(num_objects, e, e, d)), bank.pathways, 0)
    ptr = np.repeat(rng.normal(size=(num_objects, cfg.hidden_dim)), bank.pathways, 0)
    return write(bank, 0, mem, ptr, 0, True, np.full(r, 10.0), area=np.full(r, 100.0))


def _run(cfg, params, feats, bank, policy):
    outs = []
    for f in range(1, T):
        out, bank = track_step(params, cfg, bank, feats[f], f, max_cond=4, num_frames=T,
                               policy=policy)
        outs.append(out)
    return outs, bank


@pytest.mark.parametrize("name", ["samurai", "dam4sam", "sam2long", "sam3"])
def test_a_batch_of_objects_equals_each_object_alone(setup, name):
    cfg, params, feats = setup
    policy = policy_by_name(name)
    bank = _prompted(cfg, policy, feats, 2, np.random.default_rng(1))
    outs, final = _run(cfg, params, feats, bank, policy)
    compiled = track_step._cache_size()
    for i in range(2):
        alone, last = _run(cfg, params, feats, take_objects(bank, [i]), policy)
        for a, b in zip(outs, alone):
            np.testing.assert_allclose(np.asarray(a["pred_masks"][i]),
                                       np.asarray(b["pred_masks"][0]), rtol=0, atol=2e-3)
            assert ((np.asarray(a["pred_masks"][i]) > 0)
                    == (np.asarray(b["pred_masks"][0]) > 0)).mean() > 0.999
        # the same decisions: which slots hold memories, as prompts or not, and the state
        row = take_objects(final, [i])
        np.testing.assert_array_equal(np.asarray(row.valid), np.asarray(last.valid))
        np.testing.assert_array_equal(np.asarray(row.is_cond), np.asarray(last.is_cond))
        for x, y in zip(jax.tree.leaves(row.policy_state), jax.tree.leaves(last.policy_state)):
            if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # one program per batch size, however the state evolved over the frames
    assert track_step._cache_size() == compiled + 1
    present = np.mean([(np.asarray(o["pred_masks"]) > 0).any() for o in outs])
    assert present == 1.0


def test_official_outputs_unchanged_and_intermediates(setup):
    cfg, params, feats = setup
    bank = _prompted(cfg, OfficialPolicy(), feats, 2, np.random.default_rng(2))
    out, b1 = track_step(params, cfg, bank, feats[1], 1, max_cond=1, num_frames=T)
    looked, b2 = track_step(params, cfg, bank, feats[1], 1, max_cond=1, num_frames=T,
                            intermediates=True)
    for k in out:
        np.testing.assert_allclose(np.asarray(out[k]), np.asarray(looked[k]), rtol=1e-5,
                                   atol=1e-5)
    inter = looked["intermediates"]
    mass = np.asarray(inter["mem_mass"]).sum(-1) + np.asarray(inter["ptr_mass"]).sum(-1)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)  # all weight lands on valid memories
    assert (np.asarray(inter["mem_frame_idx"])[np.asarray(inter["mem_valid"])] == 0).all()
    assert "intermediates" not in out
