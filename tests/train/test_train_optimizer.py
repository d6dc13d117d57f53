"""The optimizer recipe equals the official one: the param groups `construct_optimizer` builds
from the recipe for all eight models, and ten AdamW steps (clipping, cosine schedule,
layer-wise lr decay, weight-decay groups) on a fixed gradient sequence."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samv2_jax.config import get_config  # noqa: E402
from samv2_jax.train import TrainConfig, make_optimizer  # noqa: E402
from samv2_jax.train.optimizer import RECIPES, param_groups  # noqa: E402
from samv2_jax.weights.layout import (  # noqa: E402
    official_param_shapes,
    to_jax_layout,
    to_torch_layout,
    unflatten,
)

import official  # noqa: E402

RECIPE_YAML = "configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml"


def _recipe_optim_conf():
    """The `trainer.optim` section of the official recipe, interpolations resolved."""
    import sam2
    from omegaconf import OmegaConf
    from training.utils.train_utils import register_omegaconf_resolvers

    if not OmegaConf.has_resolver("divide"):
        register_omegaconf_resolvers()
    conf = OmegaConf.load(str(Path(sam2.__file__).parent / RECIPE_YAML))
    optim = OmegaConf.create({"scratch": conf.scratch, "optim": conf.trainer.optim})
    OmegaConf.resolve(optim)
    return optim.optim


def _official_model_skeleton(name):
    """The official model's modules and parameter names without allocating its tensors."""
    import sam2  # noqa: F401  (initialises hydra with the official configs)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=official._CONFIG_FILES[name])
    OmegaConf.resolve(cfg)
    linspace = torch.linspace  # Hiera reads its drop-path rates with .item()
    torch.linspace = lambda *a, **k: linspace(*a, **dict(k, device="cpu"))
    try:
        with torch.device("meta"):
            return instantiate(cfg.model, _recursive_=True)
    finally:
        torch.linspace = linspace


def _official_groups(model, where=0.0):
    """{param name: (lr, weight_decay)} of the official optimizer at `where`."""
    from training.optimizer import construct_optimizer

    conf = _recipe_optim_conf()
    opt = construct_optimizer(model, conf.optimizer, conf.options, conf.param_group_modifiers)
    opt.step_schedulers(where, 0)
    by_id = {id(p): n for n, p in model.named_parameters()}
    table = {}
    for group in opt.optimizer.param_groups:
        for p in group["params"]:
            table[by_id[id(p)]] = (group["lr"], group["weight_decay"])
    return opt, table


def _shape_tree(cfg):
    return unflatten({k: jax.ShapeDtypeStruct(to_jax_layout(k, np.zeros(v, np.float32)).shape,
                                              jnp.float32)
                      for k, v in official_param_shapes(cfg).items()})


@pytest.mark.parametrize("name", official.MODEL_NAMES)
def test_param_groups_equal_the_official_for_every_model(name):
    model = _official_model_skeleton(name)
    _, ref = _official_groups(model)
    cfg = get_config(name)
    ours = param_groups(_shape_tree(cfg), cfg, "official")
    trainable = {n for n, g in ours.items() if not g.frozen}
    assert trainable == set(ref)  # the official buffers are not parameters
    distinct = set()
    for n, (lr, wd) in ref.items():
        g = ours[n]
        assert g.lr == pytest.approx(lr, rel=1e-12), n
        assert g.weight_decay == wd, n
        distinct.add((lr, wd))
    # Layer-wise decay gives every trunk block its own rate: many groups, all matched.
    assert len(distinct) >= cfg.trunk.depth + 2
    # The frozen-encoder recipe freezes exactly the official `freeze_image_encoder` set.
    frozen = {n for n, g in param_groups(_shape_tree(cfg), cfg, "frozen_image_encoder").items()
              if g.frozen}
    image = {n for n, _ in model.image_encoder.named_parameters(prefix="image_encoder")}
    assert frozen - image == {"sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"}
    assert image <= frozen


def test_ten_steps_equal_torch_adamw_with_clipping_and_schedule():
    """Float64 on both sides, so the comparison sees the update itself, not rounding."""
    name, total = "sam2.1_hiera_tiny", 10
    model = official.build_official(name, 256).double()
    opt, _ = _official_groups(model)
    named = dict(model.named_parameters())
    # Most steps' gradients are far above the clipping norm, two are below it.
    scales = [1.0, 1.0, 1e-7, 0.3, 1.0, 1e-7, 1.0, 0.5, 1.0, 1.0]

    def grad(k):  # drawn again on each side instead of kept (39M float64 numbers a step)
        rng = np.random.default_rng(k)
        return {n: scales[k] * rng.standard_normal(p.shape, np.float32).astype(np.float64)
                for n, p in named.items()}
    start = {n: p.detach().numpy().copy() for n, p in named.items()}
    ref_steps = []
    for k in range(total):  # the trainer's order: schedule, clip, step
        opt.step_schedulers(k / total, k)
        g = grad(k)
        for n, p in named.items():
            p.grad = torch.from_numpy(g[n])
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.1, norm_type=2)
        opt.optimizer.step()
        ref_steps.append({n: (p.detach().numpy() - start[n]).astype(np.float32)
                          for n, p in named.items()})
        del g

    with jax.enable_x64(True):
        cfg = get_config(name, 256)
        buffer = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
        params = unflatten({**{n: jnp.asarray(to_jax_layout(n, v)) for n, v in start.items()},
                            buffer: jnp.zeros((2, 128), jnp.float64)})
        tx = make_optimizer(params, cfg, "official", total, train_cfg=TrainConfig())
        state = tx.init(params)
        update = jax.jit(tx.update)
        p = params
        worst = 0.0
        for k in range(total):
            g = unflatten({**{n: jnp.asarray(to_jax_layout(n, v)) for n, v in grad(k).items()},
                           buffer: jnp.ones((2, 128), jnp.float64)})
            u, state = update(g, state, p)
            p = optax.apply_updates(p, u)
            flat = {n: np.asarray(to_torch_layout(n, np.asarray(x))) for n, x in
                    _flat(p).items()}
            del flat[buffer]
            for n, ref in ref_steps[k].items():
                # (the reference step is stored in float32: 6e-8 relative)
                err = np.abs((flat[n] - start[n]) - ref).max() / np.abs(ref).max()
                worst = max(worst, err)
                assert err <= 1e-6, (k, n, err)
        # The buffer is never updated.
        assert np.abs(np.asarray(
            p["sam_prompt_encoder"]["pe_layer"]["positional_encoding_gaussian_matrix"])).max() == 0


def _flat(tree, prefix=""):
    from samv2_jax.weights.layout import flatten

    return flatten(tree, prefix)


def test_frozen_parts_get_no_update_and_no_state_and_recipes_compose():
    cfg = get_config("sam2.1_hiera_tiny", 256)
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), _shape_tree(cfg))
    tx = make_optimizer(params, cfg, RECIPES["decoder_only"], 5)
    state = tx.init(params)
    n_state = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, "size") and x.ndim)
    n_decoder = sum(x.size for k in ("sam_mask_decoder",) for x in jax.tree.leaves(params[k]))
    n_prompt = sum(x.size for x in jax.tree.leaves(params["sam_prompt_encoder"]))
    # Adam's two moments of the trained parts only (the buffer is frozen too).
    assert n_state == 2 * (n_decoder + n_prompt - 256)
    u, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert float(jnp.abs(u["image_encoder"]["trunk"]["blocks"]["0"]["mlp"]["layers"]["0"]
                         ["weight"]).max()) == 0
    assert float(jnp.abs(u["sam_mask_decoder"]["iou_token"]["weight"]).max()) > 0
    # A typo in a pattern is an error, not a silent no-op.
    with pytest.raises(ValueError, match="matches no parameter"):
        make_optimizer(params, cfg, RECIPES["official"].replace(freeze=("image_encodr.*",)), 5)
    # Gradient accumulation: the update happens every k-th call.
    tx = make_optimizer(params, cfg, RECIPES["official"].replace(grad_accum_steps=2), 5)
    state = tx.init(params)
    g = jax.tree.map(jnp.ones_like, params)
    u1, state = tx.update(g, state, params)
    u2, state = tx.update(g, state, params)
    w = lambda u: float(jnp.abs(u["sam_mask_decoder"]["iou_token"]["weight"]).max())
    assert w(u1) == 0 and w(u2) > 0
