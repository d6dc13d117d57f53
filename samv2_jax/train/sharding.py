"""Devices for training: one mesh over every device of every host, the batch split over its
`data` axis, params replicated or split by a rule table over their names.

    mesh = make_mesh()                       # axes ("data", "model"), model size 1 by default
    shard = param_shardings(params, mesh, rules=(("image_encoder\\.trunk\\..*\\.mlp\\..*weight",
                                                  (None, "model")),))
    batch = global_batch(host_batch, mesh)   # every host passes its own rows

A rule is (regular expression over the dotted param name, partition spec as a tuple of mesh
axis names or None per dimension); the first rule whose pattern matches (`re.fullmatch`)
decides, and params no rule matches are replicated. With data parallelism alone the step is
the single-device step: the loss of the global batch is normalised by the number of valid
objects of the whole batch, which is the official DDP recipe (each rank divides its sum by the
all-reduced object count over the world size, then DDP averages the gradients).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence

import numpy as np

DATA, MODEL = "data", "model"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Join a multi-host run through `jax.distributed.initialize` (arguments, or the
    environment JAX reads: cluster managers, or SAMV2_COORDINATOR / SAMV2_NUM_PROCESSES /
    SAMV2_PROCESS_ID). Returns whether this process is part of a multi-process run. On CPU the
    collectives go through gloo."""
    import jax

    env = os.environ
    coordinator = coordinator or env.get("SAMV2_COORDINATOR")
    if num_processes is None and env.get("SAMV2_NUM_PROCESSES"):
        num_processes = int(env["SAMV2_NUM_PROCESSES"])
    if process_id is None and env.get("SAMV2_PROCESS_ID"):
        process_id = int(env["SAMV2_PROCESS_ID"])
    if coordinator is None and num_processes is None:
        return jax.process_count() > 1
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        return False
    with contextlib.suppress(AttributeError, ValueError):  # an older jax: its default
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_count() > 1


def make_mesh(devices: Sequence | None = None, model_axis: int = 1):
    """A ("data", "model") mesh over `devices` (default: every device of every host)."""
    import jax
    from jax.sharding import Mesh

    devices = list(jax.devices() if devices is None else devices)
    if model_axis < 1 or len(devices) % model_axis:
        raise ValueError(f"model_axis {model_axis} must divide the number of devices "
                         f"({len(devices)})")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // model_axis, model_axis)
    return Mesh(grid, (DATA, MODEL))


def _spec(entry):
    from jax.sharding import PartitionSpec as P

    if isinstance(entry, P):
        return entry
    return P(*[tuple(a) if isinstance(a, list) else a for a in entry])


def param_shardings(params, mesh, rules: Sequence = ()):
    """A NamedSharding per param: the first matching rule's spec, replicated otherwise."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    compiled = [(re.compile(pattern), _spec(spec)) for pattern, spec in rules]

    def choose(path, leaf):
        name = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        for regex, spec in compiled:
            if regex.fullmatch(name):
                shape = np.shape(leaf)
                if len(spec) > len(shape):
                    raise ValueError(f"sharding rule {regex.pattern!r} gives {spec} to {name!r}, "
                                     f"which has only {len(shape)} dimensions {shape}")
                for dim, axes in zip(shape, spec):
                    size = int(np.prod([mesh.shape[a] for a in
                                        ((axes,) if isinstance(axes, str) else axes or ())]))
                    if dim % size:
                        raise ValueError(f"sharding rule {regex.pattern!r}: {name!r} has shape "
                                         f"{shape}, and {dim} does not split into {size} parts")
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(choose, params)


def replicated(mesh):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    return NamedSharding(mesh, P())


def batch_sharding(mesh):
    """Leading (batch) axis over `data`, the rest whole."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    return NamedSharding(mesh, P(DATA))


def global_batch(host_batch: dict, mesh) -> dict:
    """The global arrays of a batch of which this host holds its own rows (all hosts the same
    number, in process order)."""
    import jax

    sharding = batch_sharding(mesh)
    size = mesh.shape[DATA]
    out = {}
    for k, v in host_batch.items():
        v = np.asarray(v)
        total = v.shape[0] * jax.process_count()
        if total % size:
            raise ValueError(f"the global batch ({total}) must split evenly over the {size} "
                             "data-parallel devices; choose a batch size that is a multiple "
                             "of the device count")
        out[k] = jax.make_array_from_process_local_data(sharding, v, (total, *v.shape[1:]))
    return out


def put_replicated(tree, mesh):
    """Host values (the same on every host) as arrays replicated over the mesh."""
    import jax

    return jax.device_put(tree, replicated(mesh))
