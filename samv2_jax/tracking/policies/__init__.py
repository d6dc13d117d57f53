"""Memory policies: which memories a frame attends to, which mask it keeps, what it writes.

A policy follows `MemoryPolicy` (a hashable frozen dataclass with a `select` method; the
other decisions default to the official ones through `PolicyBase`). `OfficialPolicy`
reproduces the official model and is the default everywhere. The published strategies are
policies over the same bank: `SamuraiPolicy`, `Dam4SamPolicy`, `Sam2LongPolicy`,
`Sam3Policy`, each with its published defaults; `policy_by_name` gives them by name (as
`samv2 track --memory NAME` does). The official pieces (`closest_prompted`,
`select_spatial`, `select_pointers`) are public for policies that change one part and keep
the rest.
"""

from samv2_jax.tracking.policies.base import (
    Candidates,
    MaskChoice,
    MemoryPolicy,
    MemorySelection,
    PolicyBase,
    WriteDecision,
)
from samv2_jax.tracking.policies.dam4sam import Dam4SamPolicy
from samv2_jax.tracking.policies.official import (
    OfficialPolicy,
    closest_prompted,
    select_pointers,
    select_spatial,
)
from samv2_jax.tracking.policies.sam2long import Sam2LongPolicy
from samv2_jax.tracking.policies.sam3 import Sam3Policy
from samv2_jax.tracking.policies.samurai import SamuraiPolicy

POLICIES = {
    "official": OfficialPolicy,
    "samurai": SamuraiPolicy,
    "dam4sam": Dam4SamPolicy,
    "sam2long": Sam2LongPolicy,
    "sam3": Sam3Policy,
}


def policy_by_name(name: str) -> MemoryPolicy:
    """The policy called `name` (one of POLICIES) with its published defaults."""
    try:
        return POLICIES[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown memory policy {name!r}; choose one of "
                         f"{', '.join(POLICIES)}") from None


def as_policy(policy) -> MemoryPolicy:
    """A policy given by name or as an object (checked: it must have a `select` method)."""
    if isinstance(policy, str):
        return policy_by_name(policy)
    if not isinstance(policy, MemoryPolicy):
        raise TypeError(f"policy must be a memory policy (a frozen dataclass with a select "
                        f"method, e.g. OfficialPolicy()) or one of the names "
                        f"{', '.join(POLICIES)}; got {type(policy).__name__}")
    if not hasattr(policy, "for_video"):  # a bare policy with only `select`
        return _Complete(policy)
    return policy


class _Complete(PolicyBase):
    """A select-only policy with the official defaults for the rest (hashable like it)."""

    def __init__(self, inner):
        self.inner = inner

    def select(self, *args, **kwargs):
        return self.inner.select(*args, **kwargs)

    def __hash__(self):
        return hash(self.inner)

    def __eq__(self, other):
        return isinstance(other, _Complete) and other.inner == self.inner


__all__ = ["POLICIES", "as_policy", "Candidates", "Dam4SamPolicy", "MaskChoice", "MemoryPolicy",
           "MemorySelection", "OfficialPolicy", "PolicyBase", "Sam2LongPolicy", "Sam3Policy",
           "SamuraiPolicy", "WriteDecision", "closest_prompted", "policy_by_name",
           "select_pointers", "select_spatial"]
