"""The fine-tuning run: `run(RunConfig(...))`, what `samv2 train` calls.

One step: the batch (uint8 frames, masks, object validity) is normalised on the device, the
official loss and its gradient are computed over the whole global batch (split over the mesh's
data axis), the optimizer update is applied unless the loss or a gradient is not finite
(`optax.apply_if_finite`: the step is skipped and counted; too many in a row stop the run).
The step's PRNG key is split from the key in the training state, so a run restored from a
checkpoint (params, optimizer state, step, key, data iterator) computes exactly the losses an
uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samv2_jax.train.config import TrainConfig
from samv2_jax.train.data.augment import AugmentConfig, Jitter, normalize_images

log = logging.getLogger("samv2_jax.train")


# Other names users reach for: the MOSE recipe is the official one.
RECIPE_ALIASES = {"mose": "official", "frozen_encoder": "frozen_image_encoder"}


class TrainingStopped(RuntimeError):
    """The run cannot go on (for instance: too many non-finite steps in a row)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a fine-tuning run needs; a YAML/JSON file or `--set key=value` give the same
    keys (dotted for the nested `train.*` and `augment.*`).

    model: an official name, a `.pt` or a converted model directory (or a training output).
    init: "pretrained" (the model's weights) or "random" (drawn with `seed`, from the model's
        config: for experiments and the fine-tuning benchmark).
    data / val: dataset specs `KIND:PATH[,key=value...]` (see `samv2_jax.train.data`).
    recipe: "official" (the official MOSE fine-tuning recipe), "frozen_image_encoder" or
        "decoder_only" (each sets the optimizer recipe and the matching `train` freezing), or
        an `OptimizerRecipe` (a mapping of its fields in a file).
    batch_size: the global batch (clips per step over all devices and hosts).
    precision / remat: `train.compute_dtype` / `train.remat` in short.
    param_sharding: rules (name pattern, partition spec) for params too big to replicate.
    """

    model: str = "sam2.1_hiera_tiny"
    init: str = "pretrained"
    image_size: int = 1024
    data: tuple = ()
    val: tuple = ()
    recipe: Any = "official"
    steps: int = 1000
    batch_size: int = 1
    num_frames: int = 8
    max_num_objects: int = 3
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    precision: str | None = None
    remat: tuple[str, ...] | None = None
    seed: int = 0
    out: str = "samv2_train"
    save_every: int = 1000
    keep: int = 3
    log_every: int = 1
    val_every: int = 0
    val_videos: int = 8
    val_frames: int = 0
    num_workers: int = 2
    skip_bad_data: bool = False
    max_nonfinite_steps: int = 20
    param_sharding: tuple = ()
    model_axis: int = 1
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {self.init!r}")
        for name in ("steps", "batch_size", "save_every", "keep", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_nonfinite_steps < 1:
            raise ValueError("max_nonfinite_steps must be >= 1")

    def optimizer_recipe(self):
        from samv2_jax.train.optimizer import OptimizerRecipe, get_recipe

        recipe = RECIPE_ALIASES.get(self.recipe, self.recipe) \
            if isinstance(self.recipe, str) else self.recipe
        if isinstance(recipe, Mapping):
            recipe = OptimizerRecipe(**_dataclass_from(OptimizerRecipe, recipe, "recipe"))
        return get_recipe(recipe)

    def train_config(self) -> TrainConfig:
        cfg = self.train
        recipe = self.optimizer_recipe()
        if recipe.freeze and "image_encoder.*" in recipe.freeze:
            cfg = cfg.replace(freeze_image_encoder=True)
        if recipe.train_only and not cfg.train_only:
            cfg = cfg.replace(train_only=tuple(recipe.train_only))
        if self.precision is not None:
            cfg = cfg.replace(compute_dtype=self.precision)
        if self.remat is not None:
            cfg = cfg.replace(remat=tuple(self.remat))
        return cfg

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = [_spec_text(s) for s in self.data]
        d["val"] = [_spec_text(s) for s in self.val]
        if not isinstance(self.recipe, str):
            d["recipe"] = dataclasses.asdict(self.optimizer_recipe())
        return d


def _spec_text(spec):
    from samv2_jax.train.data.pipeline import DataSpec

    if isinstance(spec, DataSpec):
        d = {"kind": spec.kind, "path": spec.path, **dict(spec.options)}
        for k in ("weight", "batch_size", "num_frames", "max_num_objects"):
            if getattr(spec, k) is not None:
                d[k] = getattr(spec, k)
        return d
    return spec


# --- building a config from files and --set ---------------------------------------------------


def _dataclass_from(cls, values: Mapping, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(names))}")
    out = {}
    for k, v in values.items():
        if isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        out[k] = v
    return out


def config_from_dict(d: Mapping) -> RunConfig:
    """A RunConfig from plain values (a parsed YAML/JSON file)."""
    d = dict(d)
    if isinstance(d.get("train"), Mapping):
        train = dict(d["train"])
        if isinstance(train.get("loss"), Mapping):
            from samv2_jax.train.config import LossConfig

            train["loss"] = LossConfig(**_dataclass_from(LossConfig, train["loss"], "train.loss"))
        d["train"] = TrainConfig(**_dataclass_from(TrainConfig, train, "train"))
    aug = d.get("augment", "default")
    if aug is None or aug is False:
        d["augment"] = None
    elif isinstance(aug, Mapping):
        aug = dict(aug)
        for k in ("clip_jitter", "frame_jitter"):
            if isinstance(aug.get(k), Mapping):
                aug[k] = Jitter(**aug[k])
        d["augment"] = AugmentConfig(**_dataclass_from(AugmentConfig, aug, "augment"))
    elif aug == "default":
        d.pop("augment", None)
    for k in ("data", "val"):
        if isinstance(d.get(k), (str, Mapping)):
            d[k] = (d[k],)
    return RunConfig(**_dataclass_from(RunConfig, d, "config"))


def parse_value(text: str):
    """A --set value: YAML scalars and lists (true, 3, 1e-4, [a, b]) or the text itself."""
    try:
        import yaml

        return yaml.safe_load(text)
    except Exception:
        return text


def apply_overrides(d: dict, pairs) -> dict:
    """Apply `key=value` (dotted keys for nested sections) to a config dict."""
    d = json.loads(json.dumps(d, default=list))
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {pair!r}: expected key=value")
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = parse_value(value)
    return d


def load_config_file(path) -> dict:
    """The dict of a YAML/JSON config file, or of a Python file defining `config`
    (a RunConfig or a dict)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    if p.suffix == ".py":
        scope: dict = {"__file__": str(p), "__name__": "samv2_train_config"}
        exec(compile(p.read_text(), str(p), "exec"), scope)
        cfg = scope.get("config")
        if cfg is None and callable(scope.get("get_config")):
            cfg = scope["get_config"]()
        if isinstance(cfg, RunConfig):
            return cfg.to_dict()
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{str(p)!r} must define `config` (a RunConfig or a dict)")
        return dict(cfg)
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise ValueError(f"config file {str(p)!r} could not be parsed ({e})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return dict(data)


# --- the step ---------------------------------------------------------------------------------


def _nan_if(bad, tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda g: jnp.where(bad, jnp.asarray(jnp.nan, g.dtype), g), tree)


def scalar_terms(aux) -> dict:
    """The scalar entries of the loss's aux dict (per-frame arrays are left out of the log)."""
    import jax.numpy as jnp

    out = {}
    if isinstance(aux, Mapping):
        for k, v in aux.items():
            if hasattr(v, "shape") and getattr(v, "ndim", 1) == 0 and jnp.issubdtype(
                    v.dtype, jnp.floating):
                out[str(k)] = v
    return out


def make_train_step(model_cfg, train_cfg: TrainConfig, optimizer, loss=None,
                    with_grads: bool = False):
    """`step(params, opt_state, key, batch) -> (params, opt_state, key, metrics)`, pure.

    `batch` holds uint8 `images` [B, T, S, S, 3], bool `masks` [B, T, O, S, S] and bool
    `obj_valid` [B, O]; `optimizer` is wrapped in `optax.apply_if_finite` by the caller.
    `with_grads` adds the gradients to the metrics (to compare steps, not for a loop)."""
    import jax
    import jax.numpy as jnp
    import optax

    if loss is None:
        from samv2_jax.train.loss import loss_fn as loss

    def step(params, opt_state, key, batch):
        key, sub = jax.random.split(key)
        inputs = {"images": normalize_images(batch["images"]), "masks": batch["masks"],
                  "obj_valid": batch["obj_valid"]}
        grad_fn = jax.value_and_grad(loss, has_aux=True)
        (value, aux), grads = grad_fn(params, inputs, sub, model_cfg=model_cfg,
                                      train_cfg=train_cfg)
        bad = ~jnp.isfinite(value)
        grads = _nan_if(bad, grads)  # a non-finite loss skips the step like a bad gradient
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": value, "grad_norm": optax.global_norm(grads),
                   **{k: v for k, v in scalar_terms(aux).items() if k != "loss"}}
        if isinstance(opt_state, optax.ApplyIfFiniteState):
            metrics["nonfinite_in_a_row"] = opt_state.notfinite_count
            metrics["nonfinite_total"] = opt_state.total_notfinite
        if with_grads:
            metrics["grads"] = grads
        return params, opt_state, key, metrics

    return step


def wrap_optimizer(optimizer, max_nonfinite: int):
    import optax

    # apply_if_finite would apply the update anyway after this many; the run stops first.
    return optax.apply_if_finite(optimizer, max_consecutive_errors=max_nonfinite + 1)


# --- the run ----------------------------------------------------------------------------------


def _initial_params(config: RunConfig):
    """(model config, host params or None when only the shapes are needed)."""
    from samv2_jax.config import PRESETS, get_config

    if config.init == "random":
        import jax

        from samv2_jax.weights.layout import init_params
        if config.model in PRESETS:
            model_cfg = get_config(config.model).replace(image_size=config.image_size)
        else:
            from samv2_jax.weights.download import resolve_model

            model_cfg = resolve_model(config.model, config.image_size).config
        params = init_params(model_cfg, jax.random.PRNGKey(config.seed))
        return model_cfg, jax.tree.map(np.asarray, params)
    from samv2_jax.weights.download import resolve_model

    model = resolve_model(config.model, config.image_size)
    import jax

    return model.config, jax.tree.map(np.asarray, model.params)


class _Log:
    """metrics.jsonl + TensorBoard + the progress bar, on the first host only."""

    def __init__(self, out: Path, config: RunConfig, start: int, active: bool):
        self.active = active
        self.out = out
        self.file = None
        self.tb = None
        self.bar = None
        if not active:
            return
        path = out / "metrics.jsonl"
        kept = []
        if path.exists():  # a resumed run: later lines belong to steps about to be redone
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a line cut by a kill
        tmp = out / "metrics.jsonl.tmp"
        tmp.write_text("".join(k + "\n" for k in kept))
        os.replace(tmp, path)
        self.file = open(path, "a")  # noqa: SIM115 (open for the whole run)
        if config.tensorboard:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start + 1)
            except ImportError:
                log.warning("tensorboardX is not installed: no TensorBoard logs")
        if config.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=config.steps, initial=start, unit="step", dynamic_ncols=True)

    def write(self, record: dict) -> None:
        if not self.active:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        step = record["step"]
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
        if self.bar is not None:
            shown = {k: record[k] for k in record if k.startswith("loss")}
            shown["step/s"] = record.get("steps_per_s", 0.0)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            self.bar.update(step - self.bar.n)

    def message(self, text: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.file is not None:
            self.file.close()


def _host(x):
    import jax

    return float(jax.device_get(x))


def run(config: RunConfig) -> dict:
    """Train as `config` says; resumes from `config.out`'s latest checkpoint when there is one.
    Returns {"out", "step", "metrics" (the last step's), "checkpoints"}."""
    import jax
    import optax

    from samv2_jax.train import sharding as shd
    from samv2_jax.train.data.pipeline import LoaderConfig, make_train_stream, parse_data_spec
    from samv2_jax.train.state import Checkpoints, write_run_file

    if isinstance(config, Mapping):
        config = config_from_dict(config)
    shd.initialize_distributed(config.coordinator, config.num_processes, config.process_id)
    specs = [parse_data_spec(s) for s in config.data]
    if not specs:
        raise ValueError("no training data: give --data KIND:PATH (or `data:` in the config)")
    out = Path(config.out).expanduser().resolve()
    primary = jax.process_index() == 0
    mesh = shd.make_mesh(model_axis=config.model_axis)
    train_cfg = config.train_config()

    ckpt = Checkpoints(out, keep=config.keep)
    start = ckpt.latest_step() or 0
    model_cfg, host_params = _initial_params(config)
    if primary:
        write_run_file(out, model_cfg, config.to_dict())
    setup = setup_training(config, model_cfg, host_params, mesh)
    del host_params
    params, opt_state, key = setup["params"], setup["opt_state"], setup["key"]

    loader_cfg = LoaderConfig(global_batch_size=config.batch_size, seed=config.seed,
                              image_size=model_cfg.image_size, num_frames=config.num_frames,
                              max_num_objects=config.max_num_objects, augment=config.augment,
                              num_workers=config.num_workers, skip_bad_data=config.skip_bad_data,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
    stream, _, weights = make_train_stream(specs, loader_cfg)
    data_it = iter(stream)
    if start:
        state = ckpt.restore(start, params, {"opt": opt_state, "key": key}, data_it)
        params, rest = state
        opt_state, key = rest["opt"], rest["key"]
    step_cfgs = [_step_train_config(train_cfg, s) for s in specs]
    step_fns: dict[TrainConfig, Any] = {}

    def step_fn(i: int):
        tc = step_cfgs[i]
        if tc not in step_fns:
            step_fns[tc] = setup["compile_step"](tc)
        return step_fns[tc]

    logger = _Log(out, config, start, primary)
    if start:
        logger.message(f"resumed from {out / 'checkpoints' / str(start)} (step {start})")
    validator = _Validator(config, model_cfg, primary) if config.val and config.val_every else None
    stop_signal = _install_sigterm()
    last_saved = start
    last: dict = {}
    pending = None
    t_prev = time.perf_counter()
    skipped_total = 0

    def finish(pending_item):
        nonlocal last, t_prev, skipped_total
        step_no, metrics, wait, skipped, dataset = pending_item
        host = {k: _host(v) for k, v in metrics.items()}
        now = time.perf_counter()
        skipped_total += skipped
        record = {"step": step_no, **host, "data_wait_s": round(wait, 6),
                  "step_s": round(now - t_prev, 6), "steps_per_s": 1.0 / max(now - t_prev, 1e-9),
                  "dataset": dataset}
        if config.skip_bad_data:
            record["skipped_videos"] = skipped_total
        t_prev = now
        if step_no % config.log_every == 0 or step_no == config.steps:
            logger.write(record)
        last = record
        if host.get("nonfinite_in_a_row", 0) >= config.max_nonfinite_steps:
            raise TrainingStopped(
                f"step {step_no}: {int(host['nonfinite_in_a_row'])} steps in a row had a "
                f"non-finite loss or gradient (skipped, {int(host['nonfinite_total'])} in all); "
                "the run stops. Lower the learning rate, use float32 (--set precision=float32) "
                f"or check the data; the last good checkpoint is step {last_saved}")

    def save(step_no: int) -> None:
        nonlocal last_saved
        if step_no == last_saved:
            return
        ckpt.save(step_no, params, {"opt": opt_state, "key": key}, data_it)
        last_saved = step_no
        logger.message(f"checkpoint {step_no} written")

    step_no = start
    try:
        with mesh:
            while step_no < config.steps:
                t0 = time.perf_counter()
                host_batch = next(data_it)
                dataset = int(np.asarray(host_batch["dataset"])[0])
                skipped = int(np.asarray(host_batch["skipped"]).sum())
                batch = shd.global_batch({k: host_batch[k] for k in
                                          ("images", "masks", "obj_valid")}, mesh)
                wait = time.perf_counter() - t0
                params, opt_state, key, metrics = step_fn(dataset)(params, opt_state, key,
                                                                   batch)
                step_no += 1
                if pending is not None:
                    finish(pending)  # the previous step's numbers, while this one runs
                pending = (step_no, metrics, wait, skipped, dataset)
                if step_no % config.save_every == 0 or step_no == config.steps:
                    finish(pending)
                    pending = None
                    save(step_no)
                if validator is not None and step_no % config.val_every == 0:
                    if pending is not None:
                        finish(pending)
                        pending = None
                    scores = validator(params)
                    if scores:
                        logger.write({"step": step_no, **scores})
                if stop_signal.is_set():
                    raise KeyboardInterrupt
            if pending is not None:
                finish(pending)
                pending = None
    except KeyboardInterrupt:
        if pending is not None:
            with contextlib.suppress(TrainingStopped):
                finish(pending)
        logger.message(f"interrupted at step {step_no}: saving a checkpoint")
        save(step_no)
        logger.close()
        ckpt.close()
        raise
    except BaseException:
        logger.close()
        ckpt.close()
        raise
    finally:
        _restore_sigterm(stop_signal)
    logger.close()
    steps_kept = ckpt.all_steps()
    ckpt.close()
    del optax
    return {"out": str(out), "step": step_no, "metrics": last, "checkpoints": steps_kept,
            "weights": weights}


def setup_training(config: RunConfig, model_cfg, host_params, mesh) -> dict:
    """Params, optimizer state and PRNG key placed on `mesh`, and `compile_step(train_cfg)`,
    the jitted step with the run's shardings (the same program for `run` and for anyone
    who wants to reproduce one of its steps)."""
    import jax

    from samv2_jax.train import sharding as shd
    from samv2_jax.train.optimizer import make_optimizer

    p_shard = shd.param_shardings(host_params, mesh, config.param_sharding)
    params = jax.device_put(host_params, p_shard)
    optimizer = wrap_optimizer(make_optimizer(params, model_cfg, config.optimizer_recipe(),
                                              config.steps),
                               config.max_nonfinite_steps)
    rep = shd.replicated(mesh)
    found = jax.jit(optimizer.init, in_shardings=(p_shard,)).lower(params).compile()
    mesh_devices = set(mesh.devices.flat)
    # State that does not follow a param (counters, flags) is replicated over the mesh.
    opt_shard = jax.tree.map(lambda s: s if set(s.device_set) == mesh_devices else rep,
                             found.output_shardings)
    init = jax.jit(optimizer.init, in_shardings=(p_shard,), out_shardings=opt_shard)

    def compile_step(train_cfg: TrainConfig, with_grads: bool = False):
        return jax.jit(make_train_step(model_cfg, train_cfg, optimizer, with_grads=with_grads),
                       in_shardings=(p_shard, opt_shard, rep, None),
                       out_shardings=(p_shard, opt_shard, rep, rep), donate_argnums=(0, 1, 2))

    return {"params": params, "opt_state": init(params),
            "key": jax.device_put(jax.random.PRNGKey(config.seed), rep),
            "compile_step": compile_step, "param_shardings": p_shard}


def _step_train_config(train_cfg: TrainConfig, spec) -> TrainConfig:
    """Image datasets (one-frame clips) are prompted with clicks or boxes: a mask prompt on
    the only frame would pass straight to the output and teach nothing."""
    if not spec.is_image:
        return train_cfg
    return train_cfg.replace(prob_to_use_pt_input_for_train=1.0,
                             num_init_cond_frames_for_train=1,
                             rand_init_cond_frames_for_train=False,
                             num_frames_to_correct_for_train=1,
                             rand_frames_to_correct_for_train=False)


class _StopFlag(threading.Event):
    previous: dict


def _install_sigterm() -> _StopFlag:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step and save a checkpoint
    (an exception in the middle of a step could leave its donated buffers deleted); a second
    Ctrl-C interrupts at once."""
    flag = _StopFlag()
    flag.previous = {}
    if threading.current_thread() is not threading.main_thread():
        return flag

    def on_signal(signum, frame):
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current == signal.SIG_IGN:
            continue  # e.g. a background job's SIGINT: leave it ignored
        flag.previous[sig] = current
        signal.signal(sig, on_signal)
    return flag


def _restore_sigterm(flag: _StopFlag) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig, handler in flag.previous.items():
            signal.signal(sig, handler)


# --- validation -------------------------------------------------------------------------------


class _Validator:
    """J&F of the current params on held-out videos: the first frame's masks as prompts, the
    rest tracked as `SAM2VideoPredictor` does, scored by `samv2_jax.evaluation`."""

    def __init__(self, config: RunConfig, model_cfg, primary: bool):
        self.config, self.model_cfg, self.primary = config, model_cfg, primary
        self.videos = None

    def _load(self):
        from samv2_jax.train.data.pipeline import eval_clips

        videos = []
        for spec in self.config.val:
            videos += list(eval_clips(spec, self.model_cfg.image_size,
                                      max_videos=self.config.val_videos,
                                      max_frames=self.config.val_frames or None))
        return videos

    def __call__(self, params) -> dict:
        import jax

        if not self.primary:
            return {}
        if self.videos is None:
            self.videos = self._load()
        host_params = jax.tree.map(np.asarray, jax.device_get(params))
        return evaluate_videos(self.model_cfg, host_params, self.videos, prefix="val/")


def _labels(masks: np.ndarray) -> np.ndarray:
    """[T, O, H, W] bool -> [T, H, W] uint8 label maps (object k is label k + 1)."""
    t, o = masks.shape[:2]
    out = np.zeros((t, *masks.shape[2:]), np.uint8)
    for k in range(o):
        out[masks[:, k]] = k + 1
    return out


def track_first_frame_masks(model_cfg, params, frames: np.ndarray, masks: np.ndarray
                            ) -> np.ndarray:
    """[T, H, W] predicted label maps of a video whose objects are given by their first-frame
    masks, tracked forward by `SAM2VideoPredictor`."""
    from samv2_jax.evaluation.dataset import labels_from_logits
    from samv2_jax.predictors.video import SAM2VideoPredictor
    from samv2_jax.weights.store import Model

    pred = SAM2VideoPredictor(Model(config=model_cfg, params=params))
    state = pred.init_state(frames)
    for k in range(masks.shape[1]):
        pred.add_new_mask(state, 0, k + 1, masks[0, k])
    out = np.zeros((len(frames), *masks.shape[2:]), np.uint8)
    for t, ids, logits in pred.propagate_in_video(state):
        out[t] = labels_from_logits(np.asarray(logits), ids)
    return out


def evaluate_videos(model_cfg, params, videos, prefix: str = "") -> dict:
    """Mean J, F and J&F over videos given as (name, frames, masks, ids), with the DAVIS
    semi-supervised protocol of `samv2_jax.evaluation` (first-frame masks as prompts)."""
    from samv2_jax.evaluation import evaluate_video, summarize

    per_video = {}
    for name, frames, masks, _ in videos:
        per_video[name] = evaluate_video(_labels(masks),
                                         track_first_frame_masks(model_cfg, params, frames,
                                                                 masks))
    s = summarize(per_video)
    return {f"{prefix}J": float(s["J"]), f"{prefix}F": float(s["F"]),
            f"{prefix}J&F": float(s["J&F"])}
