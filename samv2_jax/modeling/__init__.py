"""Pure model math: every component a function `f(params, inputs, cfg)` over a nested-dict
params pytree and a frozen config. No host I/O, no global state, no torch."""
