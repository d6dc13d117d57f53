"""The tracking core: the memory bank pytree and its per-object operations, the memory
policies, and the jit-compiled per-frame step. Pure functions; no host I/O."""
