"""Two-way transformer parity with the official `sam_mask_decoder.transformer`, as a whole and
block by block (the first block skips the query PE in self-attention), and its attention layer
(whose projections halve the width in the cross-attentions)."""

import functools

import jax
import numpy as np
import pytest
import torch

from samv2_jax.modeling.transforms import preprocess_image
from samv2_jax.modeling.two_way_transformer import attention, two_way_block, two_way_transformer

import official
from conftest import converted_pair, sample_image

TOL = 1e-4
NAME, SIZE = "sam2.1_hiera_tiny", 256
E = SIZE // 16


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@functools.lru_cache(maxsize=1)
def _inputs():
    """Real image embeddings (2 images, NCHW), the dense PE and decoder-like tokens."""
    torch_model, _ = converted_pair(NAME, SIZE)
    x = np.stack([np.asarray(preprocess_image(sample_image(300, 451), SIZE)),
                  np.asarray(preprocess_image(sample_image(256, 256, seed=1)[::-1], SIZE))])
    dec = torch_model.sam_mask_decoder
    with torch.no_grad():
        out = torch_model.forward_image(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        embed = out["backbone_fpn"][-1] + torch_model.no_mem_embed.reshape(1, -1, 1, 1)
        pe = torch_model.sam_prompt_encoder.get_dense_pe()
        coords = torch.tensor([[[60.0, 80.0], [200.0, 30.0]], [[128.0, 128.0], [10.0, 250.0]]])
        labels = torch.tensor([[1, 0], [1, 1]], dtype=torch.int32)
        sparse, dense = torch_model.sam_prompt_encoder((coords, labels), None, None)
        out_tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight,
                                dec.mask_tokens.weight])
        tokens = torch.cat([out_tokens.expand(2, -1, -1), sparse], dim=1)
        src = embed + dense
    return src.detach(), pe.detach(), tokens.detach()


@functools.partial(jax.jit, static_argnames=("depth", "num_heads"))
def _ours(p, src, pe, tokens, depth, num_heads):
    return two_way_transformer(p, src, pe, tokens, depth, num_heads)


@pytest.mark.parametrize("batch", [1, 2])
def test_two_way_transformer_matches_official(batch):
    torch_model, model = converted_pair(NAME, SIZE)
    tr = torch_model.sam_mask_decoder.transformer
    src, pe, tokens = _inputs()
    src, tokens = src[:batch], tokens[:batch]
    with torch.no_grad():
        t_q, t_k = tr(src, pe, tokens)  # image_pe has batch 1, broadcast like ours
    cfg = model.config.decoder
    q, k = _ours(model.params["sam_mask_decoder"]["transformer"], _nhwc(src), _nhwc(pe),
                 tokens.numpy(), depth=cfg.transformer_depth, num_heads=cfg.transformer_num_heads)
    assert q.shape == tuple(t_q.shape) == (batch, tokens.shape[1], 256)
    assert k.shape == tuple(t_k.shape) == (batch, E * E, 256)
    assert official.rel_err(q, t_q.numpy()) <= TOL, official.rel_err(q, t_q.numpy())
    assert official.rel_err(k, t_k.numpy()) <= TOL, official.rel_err(k, t_k.numpy())


@pytest.mark.parametrize("layer", [0, 1])
def test_two_way_block_matches_official(layer):
    torch_model, model = converted_pair(NAME, SIZE)
    tr = torch_model.sam_mask_decoder.transformer
    block = tr.layers[layer]
    assert block.skip_first_layer_pe == (layer == 0)
    src, pe, tokens = _inputs()
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = pe.flatten(2).permute(0, 2, 1).expand(keys.shape[0], -1, -1)
    # A second block sees transformed queries: give it tokens unlike the PE.
    queries = tokens if layer == 0 else tokens * 0.5 + 0.3
    with torch.no_grad():
        t_q, t_k = block(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
    p = model.params["sam_mask_decoder"]["transformer"]["layers"][str(layer)]
    q, k = two_way_block(p, queries.numpy(), keys.numpy(), tokens.numpy(), key_pe.numpy(),
                         model.config.decoder.transformer_num_heads,
                         skip_first_pe=(layer == 0))
    assert official.rel_err(q, t_q.numpy()) <= TOL
    assert official.rel_err(k, t_k.numpy()) <= TOL


@pytest.mark.parametrize("which", ["self_attn", "cross_attn_token_to_image",
                                   "cross_attn_image_to_token"])
def test_attention_matches_official(which):
    torch_model, model = converted_pair(NAME, SIZE)
    mod = getattr(torch_model.sam_mask_decoder.transformer.layers[1], which)
    heads = model.config.decoder.transformer_num_heads
    assert mod.num_heads == heads
    rng = np.random.default_rng(3)
    nq, nk = (7, 7) if which == "self_attn" else ((7, E * E) if "token_to_image" in which
                                                   else (E * E, 7))
    q = rng.standard_normal((2, nq, 256)).astype(np.float32)
    k = rng.standard_normal((2, nk, 256)).astype(np.float32)
    v = rng.standard_normal((2, nk, 256)).astype(np.float32)
    with torch.no_grad():
        theirs = mod(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v)).numpy()
    p = model.params["sam_mask_decoder"]["transformer"]["layers"]["1"][which]
    ours = np.asarray(attention(p, q, k, v, heads))
    assert ours.shape == theirs.shape == (2, nq, 256)
    assert official.rel_err(ours, theirs) <= TOL
    if which != "self_attn":  # the cross-attentions project to half the width
        assert p["q_proj"]["weight"].shape == (256, 128)
