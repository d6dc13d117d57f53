"""Training state on disk, and the training output folder as a model.

    OUT/run.json                  {"format": "samv2-jax-train", "model": {...}, "run": {...}}
    OUT/checkpoints/STEP/params/  orbax: the params (the same tree a converted model holds)
    OUT/checkpoints/STEP/opt/     orbax: optimizer state, step, PRNG key
    OUT/checkpoints/STEP/data/    grain: each host's data-iterator state
    OUT/metrics.jsonl, OUT/tensorboard/

Checkpoints go through an orbax `CheckpointManager`: a checkpoint is written into a temporary
folder and renamed to `STEP` only once every part is on disk, so a run killed at any moment
(`kill -9` included) leaves only complete checkpoints; the last `keep` are kept.
`load_training_output(OUT)` (what `samv2_jax.load(OUT)` calls) gives the latest one's params as
a `Model`; `OUT/checkpoints/STEP` names another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from samv2_jax.config import SAM2Config

RUN_FILE = "run.json"
RUN_FORMAT = "samv2-jax-train"
CHECKPOINTS = "checkpoints"


def write_run_file(out: Path, model_config: SAM2Config, run: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"format": RUN_FORMAT, "format_version": 1, "model": model_config.to_dict(),
           "run": run}
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / RUN_FILE)


def read_run_file(out: Path) -> dict:
    path = out / RUN_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{str(out)!r} is not a training output folder (no {RUN_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise ValueError(f"{str(path)!r} is not a samv2-jax training run file")
    return doc


class Checkpoints:
    """The run's orbax CheckpointManager: save/restore params, optimizer state and the data
    iterator together, atomically, keeping the last `keep`."""

    def __init__(self, out: Path, keep: int = 3):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
        self.directory = Path(out) / CHECKPOINTS
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("params", "opt", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, opt, data_iterator) -> None:
        import grain
        import orbax.checkpoint as ocp

        args = {"params": ocp.args.StandardSave(params), "opt": ocp.args.StandardSave(opt)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**args), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, params_target, opt_target, data_iterator):
        """(params, opt) restored into the targets' shapes, dtypes and shardings; the data
        iterator's state is set in place."""
        import grain
        import orbax.checkpoint as ocp

        args = {"params": ocp.args.StandardRestore(params_target),
                "opt": ocp.args.StandardRestore(opt_target)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        got = self.manager.restore(step, args=ocp.args.Composite(**args))
        return got["params"], got["opt"]

    def close(self) -> None:
        self.manager.close()


def is_training_output(path: Path) -> bool:
    path = Path(path)
    return (path / RUN_FILE).is_file() or (
        path.parent.name == CHECKPOINTS and (path.parent.parent / RUN_FILE).is_file())


def checkpoint_dir(path: Path) -> tuple[Path, Path]:
    """(OUT, OUT/checkpoints/STEP) for OUT (its latest checkpoint) or a checkpoint folder."""
    path = Path(path).expanduser().resolve()
    if path.parent.name == CHECKPOINTS and (path.parent.parent / RUN_FILE).is_file():
        return path.parent.parent, path
    steps = sorted((int(p.name) for p in (path / CHECKPOINTS).glob("*")
                    if p.name.isdigit() and (p / "params").is_dir()), reverse=True)
    if not steps:
        raise ValueError(f"training output {str(path)!r} has no checkpoint yet; train until the "
                         "first save (--save-every) or name a converted model instead")
    return path, path / CHECKPOINTS / str(steps[0])


def load_training_output(path, image_size: int | None = None):
    """The `Model` of a training output folder (latest checkpoint) or of one checkpoint
    `OUT/checkpoints/STEP`; None when `path` is neither."""
    import jax
    import orbax.checkpoint as ocp

    from samv2_jax.weights.layout import flatten, jax_param_shapes, unflatten
    from samv2_jax.weights.store import Model, _shape_problems

    if not is_training_output(path):
        return None
    out, step_dir = checkpoint_dir(path)
    doc = read_run_file(out)
    try:
        config = SAM2Config.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{str(out / RUN_FILE)!r} holds an invalid model config: {e}") from e
    if image_size is not None:
        config = config.replace(image_size=image_size)
    params_dir = step_dir / "params"
    if not params_dir.is_dir():
        raise ValueError(f"{str(step_dir)!r} is not a complete checkpoint (no params/)")
    ckptr = ocp.StandardCheckpointer()
    try:
        stored = flatten(ckptr.metadata(params_dir).item_metadata.tree)
    except Exception as e:  # orbax raises assorted types for a damaged directory
        raise ValueError(f"{str(params_dir)!r} is not a readable orbax checkpoint ({e})") from e
    problems = _shape_problems({k: tuple(m.shape) for k, m in stored.items()},
                               flatten(jax_param_shapes(config)))
    if problems:
        raise ValueError(f"checkpoint {str(step_dir)!r} does not match model {config.name}: "
                         + "; ".join(problems))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = unflatten({k: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding)
                        for k, m in stored.items()})
    return Model(config=config, params=ckptr.restore(params_dir, target))
