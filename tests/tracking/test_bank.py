"""The bank's per-object operations, on hand-made banks: each touches only the object and
slot it is asked to, and matches what the predictors did by hand before."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samv2_jax.config import get_config
from samv2_jax.tracking.bank import (
    append_objects,
    demote_prompted,
    empty_bank,
    find_frame,
    forget,
    streaming_slot,
    take_objects,
    write,
    write_object,
)

CFG = get_config("sam2.1_hiera_tiny", image_size=64)
E, D, H = CFG.embedding_size, CFG.memory.mem_dim, CFG.hidden_dim


def _filled(num_objects=3, capacity=5):
    """Object o, slot s holds frame 10*o + s with values of that number; slot 0 prompted."""
    bank = empty_bank(CFG, num_objects, capacity, jnp.float32)
    for s in range(capacity):
        frames = np.array([10 * o + s for o in range(num_objects)], np.int32)
        v = frames.astype(np.float32)
        bank = write(bank, s, np.broadcast_to(v[:, None, None, None], (num_objects, E, E, D)),
                     np.broadcast_to(v[:, None], (num_objects, H)), frames, s == 0, v)
    return bank


def test_append_and_take_objects():
    bank = _filled()
    assert append_objects(None, bank) is bank
    more = append_objects(bank, empty_bank(CFG, 1, 5, jnp.float32))
    assert more.num_objects == 4 and not bool(more.valid[3].any())
    np.testing.assert_array_equal(more.frame_idx[:3], bank.frame_idx)
    two = take_objects(bank, [2, 0])
    np.testing.assert_array_equal(two.frame_idx, bank.frame_idx[jnp.asarray([2, 0])])
    np.testing.assert_array_equal(two.maskmem, bank.maskmem[jnp.asarray([2, 0])])
    assert take_objects(bank, [1]).num_objects == 1


def test_write_object_touches_one_object_and_slot():
    bank = _filled()
    new = write_object(bank, 1, 3, jnp.full((1, E, E, D), -5.0), jnp.full((1, H), -6.0), 99,
                       True, jnp.asarray([[-7.0]]))
    changed = np.zeros((3, 5), bool)
    changed[1, 3] = True
    for name in ("maskmem", "obj_ptr", "frame_idx", "is_cond", "object_score"):
        a, b = np.asarray(getattr(bank, name)), np.asarray(getattr(new, name))
        diff = (a != b).reshape(3, 5, -1).any(-1)
        assert (diff <= changed).all(), name  # nothing outside [1, 3] changed
    assert int(new.frame_idx[1, 3]) == 99 and bool(new.is_cond[1, 3])
    assert float(new.maskmem[1, 3].max()) == -5.0 and float(new.object_score[1, 3]) == -7.0
    # A newly prompted frame goes after the object's earlier prompted frames.
    assert int(new.cond_order[1, 3]) == int(bank.cond_order[1].max()) + 1


def test_demote_prompted_keeps_the_memory():
    bank = _filled()
    assert bool(bank.is_cond[2, 0])
    new = demote_prompted(bank, 2, 20)  # object 2's slot 0 holds frame 20
    assert not bool(new.is_cond[2, 0]) and bool(new.valid[2, 0])
    np.testing.assert_array_equal(np.asarray(new.is_cond[:2]), np.asarray(bank.is_cond[:2]))
    np.testing.assert_array_equal(new.maskmem, bank.maskmem)
    # A frame the object does not hold changes nothing.
    np.testing.assert_array_equal(demote_prompted(bank, 2, 5).is_cond, bank.is_cond)


def test_forget_find_frame_and_streaming_slot():
    bank = _filled()
    drop = np.zeros((3, 5), bool)
    drop[0, 2] = drop[1, 0] = True
    gone = forget(bank, jnp.asarray(drop))
    assert not bool(gone.valid[0, 2]) and not bool(gone.is_cond[1, 0])
    slot, ok = find_frame(gone, gone.valid, jnp.asarray(13))
    assert list(np.asarray(ok)) == [False, True, False] and int(slot[1]) == 3
    # Already stored -> that slot; a free slot next; else the oldest non-prompted memory.
    np.testing.assert_array_equal(streaming_slot(bank, 11), [1, 1, 1])  # frame 11 only in obj 1
    assert list(np.asarray(streaming_slot(gone, 50))) == [2, 0, 1]
    full = streaming_slot(bank, 50)
    assert list(np.asarray(full)) == [1, 1, 1]  # slot 0 is prompted and never evicted


@pytest.mark.parametrize("op", ["append", "take", "write_object", "demote"])
def test_operations_are_jittable(op):
    bank = _filled(2, 4)
    fns = {
        "append": lambda b: append_objects(b, take_objects(b, [0])),
        "take": lambda b: take_objects(b, [1]),
        "write_object": lambda b: write_object(b, 0, 2, jnp.zeros((1, E, E, D)),
                                               jnp.zeros((1, H)), 7, False, 0.0),
        "demote": lambda b: demote_prompted(b, 1, 10),
    }
    eager, jitted = fns[op](bank), jax.jit(fns[op])(bank)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(a, b)
