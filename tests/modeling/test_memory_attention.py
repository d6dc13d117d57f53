"""Memory attention parity with the official `memory_attention`: several memory frames plus
object-pointer tokens, no pointer tokens, and a padded bank (invalid frames and pointers
holding garbage) against the official on the valid tokens only; and the axial RoPE alone
against the official complex form."""

import functools

import jax
import numpy as np
import pytest
import torch

from samv2_jax.modeling.layers import dot_product_attention
from samv2_jax.modeling.memory_attention import memory_attention
from samv2_jax.modeling.rope import apply_rope, apply_rope_frames, axial_cos_sin

import official
from conftest import converted_pair

TOL = 1e-4
SIZE = 256
E = SIZE // 16
N = E * E
MEM_DIM = 64
MODELS = ("sam2_hiera_tiny", "sam2.1_hiera_tiny")


@functools.partial(jax.jit, static_argnums=(1, 6, 7))
def _ours(p, cfg, curr, curr_pos, memory, memory_pos, num_ptr, feat_hw, valid):
    return memory_attention(p, cfg, curr, curr_pos, memory, memory_pos, num_ptr, feat_hw, valid)


def _query(batch: int, rng, n: int = N):
    curr = rng.normal(size=(batch, n, 256)).astype(np.float32)
    curr_pos = rng.normal(size=(batch, n, 256)).astype(np.float32)
    return curr, curr_pos


def _memory(batch: int, frames: int, ptrs: int, rng, n: int = N):
    m = frames * n + ptrs
    return (rng.normal(size=(batch, m, MEM_DIM)).astype(np.float32),
            rng.normal(size=(batch, m, MEM_DIM)).astype(np.float32))


def _official(torch_model, curr, curr_pos, memory, memory_pos, num_ptr):
    """The official call as SAM2Base makes it: sequence-first tensors, curr in a list."""
    def seq(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))

    with torch.no_grad():
        out = torch_model.memory_attention(curr=[seq(curr)], curr_pos=[seq(curr_pos)],
                                           memory=seq(memory), memory_pos=seq(memory_pos),
                                           num_obj_ptr_tokens=num_ptr)
    return out.numpy().transpose(1, 0, 2)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("frames,ptrs", [(3, 8), (2, 0)])
def test_memory_attention_matches_official(name, frames, ptrs):
    torch_model, model = converted_pair(name, SIZE)
    rng = np.random.default_rng(frames * 10 + ptrs)
    curr, curr_pos = _query(2, rng)
    memory, memory_pos = _memory(2, frames, ptrs, rng)
    want = _official(torch_model, curr, curr_pos, memory, memory_pos, ptrs)
    got = _ours(model.params["memory_attention"], model.config, curr, curr_pos, memory,
                memory_pos, ptrs, (E, E), None)
    err = official.rel_err(got, want)
    print(f"{name} frames={frames} ptrs={ptrs}: {err:.2e}")
    assert err < TOL


def test_one_frame_shared_by_objects_matches_official_per_object():
    """The current frame given once ([1, N, C]) for three objects' memories: each object's
    output equals the official run on that object alone (the shared first-layer
    self-attention runs once), and equals passing the frame three times."""
    torch_model, model = converted_pair(MODELS[1], SIZE)
    rng = np.random.default_rng(3)
    curr, curr_pos = _query(1, rng)
    memory, memory_pos = _memory(3, 2, 8, rng)
    p, cfg = model.params["memory_attention"], model.config
    got = np.asarray(_ours(p, cfg, curr, curr_pos, memory, memory_pos, 8, (E, E), None))
    assert got.shape == (3, N, 256)
    want = np.concatenate([_official(torch_model, curr, curr_pos, memory[i:i + 1],
                                     memory_pos[i:i + 1], 8) for i in range(3)])
    assert official.rel_err(got, want) < TOL
    repeated = _ours(p, cfg, np.repeat(curr, 3, 0), np.repeat(curr_pos, 3, 0), memory,
                     memory_pos, 8, (E, E), None)
    np.testing.assert_allclose(got, np.asarray(repeated), rtol=0, atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-2  # the objects' memories do matter


def _padded_bank(rng, valid_frames, valid_ptrs, cap_frames, cap_ptrs, real, n: int):
    """Place the real frames / pointers of `real` into a fixed-capacity bank at the given
    slots; every other slot holds large garbage (and one a NaN). Returns memory, pos, valid."""
    mem, pos = real
    bank = rng.normal(scale=30.0, size=(2, cap_frames * n + cap_ptrs, MEM_DIM)).astype(np.float32)
    bank_mem, bank_pos = bank[0], bank[1]
    valid = np.zeros(cap_frames * n + cap_ptrs, bool)
    for j, slot in enumerate(valid_frames):
        dst, src = slice(slot * n, (slot + 1) * n), slice(j * n, (j + 1) * n)
        bank_mem[dst], bank_pos[dst], valid[dst] = mem[src], pos[src], True
    base = len(valid_frames) * n
    for j, slot in enumerate(valid_ptrs):
        dst = cap_frames * n + slot
        bank_mem[dst], bank_pos[dst], valid[dst] = mem[base + j], pos[base + j], True
    bank_mem[np.flatnonzero(~valid)[0]] = np.nan
    return bank_mem, bank_pos, valid


@pytest.mark.parametrize("name,size", [(MODELS[0], SIZE), (MODELS[1], SIZE), (MODELS[1], 512)])
def test_padded_memory_matches_official_on_valid_tokens(name, size):
    """Two objects in one batch with different valid slots (some whole frames invalid, some
    pointer slots invalid, one object with no pointers at all) equal the official run on each
    object's valid tokens alone. At 512 the attention runs over query chunks."""
    torch_model, model = converted_pair(name, size)
    e = size // 16
    n = e * e
    rng = np.random.default_rng(7)
    cap_frames, cap_ptrs = 4, 8
    layouts = [((0, 2), (1, 2, 5, 6)), ((3,), ())]  # (valid frame slots, valid pointer slots)
    curr, curr_pos = _query(2, rng, n)
    wants, mems, poss, valids = [], [], [], []
    for b, (frames, ptrs) in enumerate(layouts):
        mem, pos = _memory(1, len(frames), len(ptrs), rng, n)
        wants.append(_official(torch_model, curr[b:b + 1], curr_pos[b:b + 1], mem, pos,
                               len(ptrs)))
        m, p, v = _padded_bank(rng, frames, ptrs, cap_frames, cap_ptrs, (mem[0], pos[0]),
                               n)
        mems.append(m), poss.append(p), valids.append(v)
    got = _ours(model.params["memory_attention"], model.config, curr, curr_pos,
                np.stack(mems), np.stack(poss), cap_ptrs, (e, e), np.stack(valids))
    want = np.concatenate(wants)
    assert np.isfinite(np.asarray(got)).all()
    err = official.rel_err(got, want)
    print(f"{name} {size} padded: {err:.2e}")
    assert err < TOL


def test_rope_matches_official_complex_form():
    """Real cos/sin rotation == official complex rotation, queries and repeated-frame keys,
    at a non-default grid (the official recomputes its table for it)."""
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    rng = np.random.default_rng(0)
    h = w = 8
    dim, heads = 32, 2
    q = rng.normal(size=(2, h * w, heads, dim)).astype(np.float32)
    k = rng.normal(size=(2, 3 * h * w, heads, dim)).astype(np.float32)
    cis = compute_axial_cis(dim=dim, end_x=w, end_y=h, theta=10000.0)
    tq, tk = apply_rotary_enc(torch.from_numpy(q.transpose(0, 2, 1, 3)),
                              torch.from_numpy(k.transpose(0, 2, 1, 3)), cis, repeat_freqs_k=True)
    cos, sin = axial_cos_sin(dim, h, w)
    got_q = apply_rope(q, cos, sin)
    got_k = apply_rope_frames(k, cos, sin)
    err_q = official.rel_err(got_q, tq.numpy().transpose(0, 2, 1, 3))
    err_k = official.rel_err(got_k, tk.numpy().transpose(0, 2, 1, 3))
    print(f"rope: q {err_q:.2e}, k {err_k:.2e}")
    assert err_q < 1e-6 and err_k < 1e-6


@pytest.mark.parametrize("b,h,nq,nk", [(2, 2, 16, 40), (1, 1, 512, 4200), (256, 1, 4, 9)])
def test_key_mask_equals_dropping_the_keys(b, h, nq, nk):
    """dot_product_attention with key_valid == attention over the valid keys alone, on each
    of its code paths (whole, query chunks, window groups)."""
    rng = np.random.default_rng(nk)
    q, k, v = (rng.normal(size=(b, n, h, 8)).astype(np.float32) for n in (nq, nk, nk))
    valid = rng.random((b, nk)) < 0.6
    valid[:, 0] = True
    got = np.asarray(jax.jit(dot_product_attention)(q, k, v, valid))
    for i in range(b):
        keep = valid[i]
        want = np.asarray(dot_product_attention(q[i:i + 1], k[i:i + 1, keep], v[i:i + 1, keep]))
        assert official.rel_err(got[i:i + 1], want) < 1e-5
