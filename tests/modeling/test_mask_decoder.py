"""Mask decoder parity with the official `sam_mask_decoder`.

The decoder gets the same inputs on both sides: image features from the official encoder on
real pictures (with no_mem_embed, as the predictor stores them), the official dense positional
encoding, and the official prompt encoder's sparse / dense embeddings. Compared: masks, IoU
predictions, SAM output tokens and object-score logits, for multimask on and off (including
the dynamic fallback to the best multimask output when the single mask is unstable), with and
without the high-resolution features, batches of images and one image shared by a batch of
prompt sets; on a 2.1 and a 2.0 model.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch

from samv2_jax.modeling.mask_decoder import mask_decoder, predict_masks, stability_scores
from samv2_jax.modeling.transforms import preprocess_image

import official
from conftest import converted_pair, sample_image

TOL = 1e-4
SIZE = 256
TINY, LARGE_V20 = "sam2.1_hiera_tiny", "sam2_hiera_large"
E = SIZE // 16


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@functools.lru_cache(maxsize=1)
def _image_features():
    """Official tiny features of two real pictures (NCHW torch): embed, [feat_s0, feat_s1]."""
    torch_model, _ = converted_pair(TINY, SIZE)
    x = np.stack([np.asarray(preprocess_image(sample_image(300, 451), SIZE)),
                  np.asarray(preprocess_image(sample_image(240, 240, seed=1)[:, ::-1], SIZE))])
    with torch.no_grad():
        out = torch_model.forward_image(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        embed = out["backbone_fpn"][-1] + torch_model.no_mem_embed.reshape(1, -1, 1, 1)
    return embed, list(out["backbone_fpn"][:2])


@functools.partial(jax.jit, static_argnames=("cfg", "multimask_output"))
def _our_decoder(p, cfg, embed, pe, sparse, dense, high_res, multimask_output):
    return mask_decoder(p, cfg, embed, pe, sparse, dense, multimask_output=multimask_output,
                        high_res_features=high_res)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _our_predict_masks(p, cfg, embed, pe, sparse, dense, high_res):
    return predict_masks(p, cfg, embed, pe, sparse, dense, high_res)


def _prompts(torch_model, b, n_points, seed, with_box=False, with_mask=False):
    """Official sparse / dense prompt embeddings for b random prompt sets."""
    rng = np.random.default_rng(seed)
    coords = torch.from_numpy(rng.uniform(0, SIZE, (b, n_points, 2)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 2, (b, n_points)).astype(np.int32))
    boxes = masks = None
    if with_box:
        xy0 = rng.uniform(0, SIZE / 2, (b, 2))
        boxes = torch.from_numpy(
            np.concatenate([xy0, xy0 + rng.uniform(20, SIZE / 2, (b, 2))], 1).astype(np.float32))
    if with_mask:
        masks = torch.from_numpy((6 * rng.standard_normal((b, 1, 4 * E, 4 * E))).astype(np.float32))
    with torch.no_grad():
        sparse, dense = torch_model.sam_prompt_encoder((coords, labels), boxes, masks)
    return sparse.detach(), dense.detach()


def _decode_both(name, embed, high_res, sparse, dense, multimask, repeat_image,
                 use_high_res=True, monkeypatch=None):
    torch_model, model = converted_pair(name, SIZE)
    dec = torch_model.sam_mask_decoder
    cfg = model.config.decoder
    if not use_high_res:
        cfg = dataclasses.replace(cfg, use_high_res_features=False)
        monkeypatch.setattr(dec, "use_high_res_features", False)
    with torch.no_grad():
        pe = torch_model.sam_prompt_encoder.get_dense_pe()
        theirs = dec(image_embeddings=embed, image_pe=pe, sparse_prompt_embeddings=sparse,
                     dense_prompt_embeddings=dense, multimask_output=multimask,
                     repeat_image=repeat_image,
                     high_res_features=high_res if use_high_res else None)
    ours = _our_decoder(model.params["sam_mask_decoder"], cfg, _nhwc(embed), _nhwc(pe),
                        sparse.numpy(), _nhwc(dense),
                        tuple(_nhwc(f) for f in high_res) if use_high_res else None,
                        multimask_output=multimask)
    return [np.asarray(o) for o in ours], [t.detach().numpy() for t in theirs]


def _assert_outputs_match(ours, theirs, what):
    for part, o, t in zip(("masks", "ious", "sam_tokens", "object_score_logits"), ours, theirs):
        assert o.shape == t.shape, (what, part, o.shape, t.shape)
        err = official.rel_err(o, t)
        assert err <= TOL, (what, part, err)


CASES = {
    # name: (batch of images, prompt sets, points, box, mask, multimask, high-res features)
    "one prompt, multimask": (1, 1, 1, False, False, True, True),
    "one prompt, single mask": (1, 1, 3, False, False, False, True),
    "two images, box + points, multimask": (2, 2, 2, True, False, True, True),
    "two images, mask prompt, single mask": (2, 2, 1, False, True, False, True),
    "one image for 3 prompt sets, multimask": (1, 3, 2, False, False, True, True),
    "one image for 3 prompt sets, single mask": (1, 3, 2, True, False, False, True),
    "no high-res features, multimask": (2, 2, 2, False, False, True, False),
    "no high-res features, single mask": (1, 1, 1, True, False, False, False),
}


@pytest.mark.parametrize("name", [TINY, LARGE_V20])
@pytest.mark.parametrize("case", list(CASES))
def test_mask_decoder_matches_official(name, case, monkeypatch):
    n_img, n_prompts, n_points, box, mask, multimask, high_res = CASES[case]
    torch_model, model = converted_pair(name, SIZE)
    embed, hr = _image_features()
    embed, hr = embed[:n_img], [f[:n_img] for f in hr]
    sparse, dense = _prompts(torch_model, n_prompts, n_points, seed=len(case), with_box=box,
                             with_mask=mask)
    repeat = n_img == 1 and n_prompts > 1
    ours, theirs = _decode_both(name, embed, hr, sparse, dense, multimask, repeat,
                                use_high_res=high_res, monkeypatch=monkeypatch)
    masks = ours[0]
    m = 3 if multimask else 1
    assert masks.shape == (n_prompts, m, 4 * E, 4 * E) and ours[1].shape == (n_prompts, m)
    assert ours[2].shape == (n_prompts, m if multimask else 1, 256)
    assert ours[3].shape == (n_prompts, 1)
    _assert_outputs_match(ours, theirs, (name, case))


@pytest.mark.parametrize("name", [TINY, LARGE_V20])
def test_predict_masks_all_tokens(name):
    """All four mask tokens, before any selection."""
    torch_model, model = converted_pair(name, SIZE)
    embed, hr = _image_features()
    sparse, dense = _prompts(torch_model, 2, 2, seed=5, with_box=True)
    dec = torch_model.sam_mask_decoder
    with torch.no_grad():
        pe = torch_model.sam_prompt_encoder.get_dense_pe()
        theirs = dec.predict_masks(embed, pe, sparse, dense, repeat_image=False,
                                   high_res_features=hr)
    ours = _our_predict_masks(model.params["sam_mask_decoder"], model.config.decoder,
                              _nhwc(embed), _nhwc(pe), sparse.numpy(), _nhwc(dense),
                              tuple(_nhwc(f) for f in hr))
    for part, o, t in zip(("masks", "ious", "mask_tokens", "obj"), ours, theirs):
        t = t.detach().numpy()
        assert o.shape == t.shape, (part, o.shape, t.shape)
        assert official.rel_err(o, t) <= TOL, (part, official.rel_err(o, t))
    assert ours[0].shape == (2, 4, 4 * E, 4 * E)
    # The object score is a real prediction here, not the constant 10 of models without it.
    assert model.config.decoder.pred_obj_scores
    assert np.ptp(np.asarray(ours[3])) > 0


def test_dynamic_multimask_uses_both_branches():
    """A batch where the single-mask output is stable for some items (kept) and unstable for
    others (replaced by the multimask output with the best predicted IoU)."""
    torch_model, model = converted_pair(TINY, SIZE)
    dec = torch_model.sam_mask_decoder
    thresh = dec.dynamic_multimask_stability_thresh
    assert dec.dynamic_multimask_via_stability and not dec.training and thresh == 0.98
    embed, hr = _image_features()
    embed, hr = embed[:1], [f[:1] for f in hr]
    # A pool of prompt sets; keep two clearly stable and two clearly unstable ones (a margin
    # keeps tiny numeric differences from flipping the choice).
    sparse, dense = _prompts(torch_model, 24, 2, seed=0)
    with torch.no_grad():
        pe = torch_model.sam_prompt_encoder.get_dense_pe()
        all_masks = dec.predict_masks(embed, pe, sparse, dense, repeat_image=True,
                                      high_res_features=hr)[0]
        stab = dec._get_stability_scores(all_masks[:, :1])[:, 0].numpy()
    stable = np.flatnonzero(stab >= thresh + 0.002)[:2]
    unstable = np.flatnonzero(stab < thresh - 0.002)[:2]
    assert len(stable) == 2 and len(unstable) == 2, stab
    pick = np.array([stable[0], unstable[0], unstable[1], stable[1]])
    sparse, dense = sparse[pick], dense[pick] if dense.shape[0] > 1 else dense

    ours, theirs = _decode_both(TINY, embed, hr, sparse, dense, multimask=False,
                                repeat_image=True)
    _assert_outputs_match(ours, theirs, "dynamic multimask")
    with torch.no_grad():
        all_masks, all_ious = dec.predict_masks(embed, pe, sparse, dense, repeat_image=True,
                                                high_res_features=hr)[:2]
        is_stable = (dec._get_stability_scores(all_masks[:, :1]) >= thresh)[:, 0].numpy()
    all_masks, all_ious = all_masks.numpy(), all_ious.numpy()
    # Both branches were really taken by the official decoder ...
    assert is_stable.tolist() == [True, False, False, True]
    # ... and ours took the same ones: the single mask where stable, else the best multimask.
    for i, st in enumerate(is_stable):
        if st:
            expected, expected_iou = all_masks[i, 0], all_ious[i, 0]
        else:
            best = 1 + int(np.argmax(all_ious[i, 1:]))
            expected, expected_iou = all_masks[i, best], all_ious[i, best]
            assert official.rel_err(expected, all_masks[i, 0]) > 1e-2  # a different mask
        assert official.rel_err(ours[0][i, 0], expected) <= TOL, i
        assert abs(ours[1][i, 0] - expected_iou) <= TOL, i
    # Our own stability scores give the same decisions.
    ours_stable = np.asarray(stability_scores(all_masks[:, :1], 0.05))[:, 0] >= thresh
    assert ours_stable.tolist() == is_stable.tolist()


def test_stability_scores_match_official():
    torch_model, model = converted_pair(TINY, SIZE)
    dec = torch_model.sam_mask_decoder
    delta = dec.dynamic_multimask_stability_delta
    assert delta == model.config.decoder.dynamic_multimask_stability_delta
    rng = np.random.default_rng(0)
    logits = rng.uniform(-0.2, 0.2, (3, 4, 16, 20)).astype(np.float32)
    logits[0, 0] = -1.0  # nothing above -delta: no union, score 1 by definition
    logits[0, 1] = 5.0  # everything above +delta: score 1
    logits[1, 0, :4] = np.float32(delta)  # exactly on the thresholds (strict >)
    logits[1, 0, 4:8] = -np.float32(delta)
    logits[2, 3] = np.where(rng.random((16, 20)) < 0.5, 0.0, 1.0)  # inside the band, or above
    theirs = dec._get_stability_scores(torch.from_numpy(logits)).numpy()
    ours = np.asarray(stability_scores(logits, delta))
    assert ours.shape == theirs.shape == (3, 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
    assert ours[0, 0] == 1.0 and ours[0, 1] == 1.0
    assert 0.0 < ours[2, 3] < 1.0 and ours.min() < 0.9
