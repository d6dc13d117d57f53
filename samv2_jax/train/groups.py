"""Parameter groups by name patterns over the param tree (as big_vision chooses them).

A parameter's name is its dotted path in the tree, which is the official state-dict key
(`image_encoder.trunk.blocks.3.attn.qkv.weight`). Patterns are `fnmatch` patterns matched
case-sensitively against the whole name (`image_encoder.*`, `*bias*`), the way the official
optimizer code matches `param_names`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp


def leaf_name(path) -> str:
    """The dotted name of a tree path (dict keys, sequence indices)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return ".".join(parts)


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def map_named(fn: Callable[[str, object], object], tree):
    """tree_map with each leaf's dotted name."""
    return jax.tree_util.tree_map_with_path(lambda path, x: fn(leaf_name(path), x), tree)


def param_names(tree) -> list[str]:
    return [leaf_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def check_patterns(tree, patterns: Sequence[str], what: str) -> None:
    """Every pattern must name at least one parameter: a typo would otherwise silently
    freeze (or re-weight) nothing."""
    names = param_names(tree)
    for p in patterns:
        if not fnmatch.filter(names, p):
            raise ValueError(f"{what} pattern {p!r} matches no parameter; names look like "
                             f"{names[0]!r} (fnmatch patterns over dotted names)")


def is_frozen(name: str, frozen: Sequence[str], train_only: Sequence[str] = ()) -> bool:
    """Frozen: named by a `frozen` pattern, or (when `train_only` is given) by none of it."""
    return matches(name, frozen) or (bool(train_only) and not matches(name, train_only))


def freeze(params, frozen: Sequence[str], train_only: Sequence[str] = ()):
    """Frozen parameters (`is_frozen`) enter the computation through stop_gradient:
    differentiation then never reaches them (nothing of their backward pass is built)."""
    if not frozen and not train_only:
        return params
    return map_named(
        lambda n, x: jax.lax.stop_gradient(x) if is_frozen(n, frozen, train_only) else x, params)


def cast_floating(tree, dtype):
    """Floating-point leaves cast to `dtype` (bfloat16 compute over float32 master weights:
    the cast is inside the differentiated function, so gradients come back in float32)."""
    dtype = jnp.dtype(dtype)

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, tree)


def split(params, frozen: Sequence[str], train_only: Sequence[str] = ()):
    """(frozen part, trained part): two trees of the same structure, None where a leaf
    belongs to the other one; `merge` puts them back together. Differentiating with respect
    to the trained part alone leaves the frozen leaves out of the gradient tree."""
    sel = map_named(lambda n, x: x if is_frozen(n, frozen, train_only) else None, params)
    rest = map_named(lambda n, x: None if is_frozen(n, frozen, train_only) else x, params)
    return sel, rest


def merge(a, b):
    """Inverse of `split`."""
    return jax.tree.map(lambda x, y: y if x is None else x, a, b,
                        is_leaf=lambda x: x is None)
