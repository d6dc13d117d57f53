"""The official optimizer recipe in optax, with parameter groups by name patterns.

The recipe of `sam2.1_hiera_b+_MOSE_finetune.yaml` (`training/optimizer.py` builds it as
torch param groups): AdamW (betas 0.9 / 0.999, eps 1e-8); learning rate 5e-6, 3e-6 for the
image encoder, both cosine-annealed to a tenth over the run without warm-up; layer-wise lr
decay 0.9 over the Hiera trunk (block i of D gets 0.9 ** (D - i), the patch embedding
0.9 ** (D + 1), the position embeddings exempt); weight decay 0.1 except on biases and on
`nn.LayerNorm` parameters (the `LayerNorm2d` ones do decay); the gradient clipped to a
global norm of 0.1 (over the trainable parameters, as torch's `clip_grad_norm_`).

`OptimizerRecipe` holds it as rules over dotted parameter names (first matching rule wins,
as in big_vision's `optax.make`), so a recipe can freeze parts, train only some, give a
component its own learning rate or re-weight it. `param_groups` shows what each parameter
gets; `make_optimizer` builds the optax transformation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from samv2_jax.config import SAM2Config
from samv2_jax.train import groups
from samv2_jax.train.config import BUFFERS

# The parameters of the official model's `torch.nn.LayerNorm` modules (exempt from weight
# decay in the recipe): Hiera block norms, the two-way transformer's, memory attention's.
LAYER_NORM_PATTERNS = (
    "image_encoder.trunk.blocks.*.norm1.*", "image_encoder.trunk.blocks.*.norm2.*",
    "sam_mask_decoder.transformer.layers.*.norm*", "sam_mask_decoder.transformer.norm_final_attn.*",
    "memory_attention.layers.*.norm*", "memory_attention.norm.*",
)


@dataclass(frozen=True)
class OptimizerRecipe:
    """Optimizer settings as rules over dotted parameter names (fnmatch; first match wins).

    lr: (pattern, base learning rate) rules; every parameter must match one.
    lr_mults: (pattern, factor) rules multiplying the learning rate (e.g. a component
        trained faster); parameters matching none keep factor 1.
    layer_decay: lr factor per trunk depth step under `layer_decay_prefix`
        (official `layer_decay_param_modifier`); `layer_decay_exempt` (pattern, factor)
        rules replace it (the position embeddings).
    weight_decay: (pattern, decay) rules.
    freeze: parameters not updated (and without optimizer state); train_only, when not
        empty, freezes every parameter it does not match.
    end_lr_factor: the cosine schedule goes from each lr to lr * end_lr_factor over the run,
        after `warmup_steps` of linear warm-up from 0 (the recipe has none).
    grad_clip_norm: global-norm clipping (None: off); grad_accum_steps > 1 accumulates that
        many gradients per update (optax.MultiSteps; schedules count updates).
    """

    lr: tuple[tuple[str, float], ...] = (("image_encoder.*", 3e-6), ("*", 5e-6))
    lr_mults: tuple[tuple[str, float], ...] = ()
    layer_decay: float = 0.9
    layer_decay_prefix: str = "image_encoder.trunk"
    layer_decay_exempt: tuple[tuple[str, float], ...] = (("*pos_embed*", 1.0),)
    weight_decay: tuple[tuple[str, float], ...] = (
        ("*bias*", 0.0), *((p, 0.0) for p in LAYER_NORM_PATTERNS), ("*", 0.1))
    freeze: tuple[str, ...] = ()
    train_only: tuple[str, ...] = ()
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    end_lr_factor: float = 0.1
    warmup_steps: int = 0
    grad_clip_norm: float | None = 0.1
    grad_accum_steps: int = 1

    def replace(self, **changes) -> OptimizerRecipe:
        return dataclasses.replace(self, **changes)


RECIPES: dict[str, OptimizerRecipe] = {
    # The official sam2.1 fine-tuning recipe.
    "official": OptimizerRecipe(),
    # Image encoder frozen (pair with TrainConfig(freeze_image_encoder=True)).
    "frozen_image_encoder": OptimizerRecipe(freeze=("image_encoder.*",)),
    # Only the prompt encoder and mask decoder (pair with TrainConfig(train_only=...)).
    "decoder_only": OptimizerRecipe(train_only=("sam_prompt_encoder.*", "sam_mask_decoder.*")),
}


def get_recipe(recipe: str | OptimizerRecipe) -> OptimizerRecipe:
    if isinstance(recipe, OptimizerRecipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown optimizer recipe {recipe!r}; known: {', '.join(RECIPES)}, "
                         "or pass an OptimizerRecipe")
    return RECIPES[recipe]


@dataclass(frozen=True)
class ParamGroup:
    lr: float            # base learning rate times every factor (at the schedule's start)
    weight_decay: float
    frozen: bool


def _first(rules, name, default=None):
    for pattern, value in rules:
        if groups.matches(name, (pattern,)):
            return value
    return default


def trunk_layer_id(name: str, depth: int) -> int:
    """Depth index of a trunk parameter (official `Hiera.get_layer_id`): 0 for the patch and
    position embeddings, i + 1 for block i, depth + 1 for anything else."""
    if "pos_embed" in name or "patch_embed" in name:
        return 0
    if "blocks" in name:
        return int(name.split("blocks")[1].split(".")[1]) + 1
    return depth + 1


def param_groups(params, model_cfg: SAM2Config, recipe: str | OptimizerRecipe = "official",
                 frozen: tuple[str, ...] = (), train_only: tuple[str, ...] = ()
                 ) -> dict[str, ParamGroup]:
    """What every parameter gets, by dotted name: learning rate, weight decay, frozen."""
    recipe = get_recipe(recipe)
    names = groups.param_names(params)
    frozen = BUFFERS + tuple(recipe.freeze) + tuple(frozen)
    train_only = tuple(recipe.train_only) + tuple(train_only)
    for what, rules in (("freeze", frozen), ("train_only", train_only),
                        ("lr_mults", [p for p, _ in recipe.lr_mults])):
        groups.check_patterns(params, rules, what)
    depth = model_cfg.trunk.depth
    num_layers = depth + 1
    out = {}
    for name in names:
        base = _first(recipe.lr, name)
        wd = _first(recipe.weight_decay, name)
        if base is None or wd is None:
            which = "lr" if base is None else "weight_decay"
            raise ValueError(f"parameter {name!r} matches no {which} rule of the recipe; end "
                             "the rules with '*'")
        scale = 1.0
        if recipe.layer_decay != 1.0 and name.startswith(recipe.layer_decay_prefix):
            scale = recipe.layer_decay ** (num_layers - trunk_layer_id(name, depth))
            scale = _first(recipe.layer_decay_exempt, name, scale)
        scale *= _first(recipe.lr_mults, name, 1.0)
        is_frozen = groups.is_frozen(name, frozen, train_only)
        out[name] = ParamGroup(lr=float(base) * float(scale), weight_decay=float(wd),
                               frozen=is_frozen)
    return out


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Global-norm clipping exactly as torch's `clip_grad_norm_`: scaled by
    min(1, max_norm / (norm + 1e-6)) (optax's own version has no epsilon)."""

    def clip(updates, params=None):
        del params
        norm = optax.global_norm(updates)
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates)

    return optax.stateless(clip)


def _per_leaf(fn, values: dict[str, float]) -> optax.GradientTransformation:
    """A stateless transformation applying fn(update, param, value of that leaf's name)."""

    def apply(updates, params=None):
        if params is None:
            params = updates
        return jax.tree_util.tree_map_with_path(
            lambda path, u, p: fn(u, p, values[groups.leaf_name(path)]), updates, params)

    return optax.stateless(apply)


def lr_factor_schedule(recipe: OptimizerRecipe, total_steps: int):
    """The schedule every group's learning rate follows, as a factor of its base value:
    the official cosine (fvcore `CosineParamScheduler` at where = step / total_steps)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    decay_steps = max(total_steps - recipe.warmup_steps, 1)
    cosine = optax.cosine_decay_schedule(1.0, decay_steps, alpha=recipe.end_lr_factor)
    if recipe.warmup_steps <= 0:
        return cosine
    warm = optax.linear_schedule(0.0, 1.0, recipe.warmup_steps)
    return optax.join_schedules([warm, cosine], [recipe.warmup_steps])


def make_optimizer(params, model_cfg: SAM2Config, recipe: str | OptimizerRecipe = "official",
                   total_steps: int = 1, *, train_cfg=None) -> optax.GradientTransformation:
    """The official optimizer recipe for `params` (official `construct_optimizer` with the
    recipe's options and layer-decay modifier, plus the trainer's clipping and schedule).

    recipe: an OptimizerRecipe or a name in RECIPES; total_steps: optimizer updates in the
    run (the cosine's length). With `train_cfg`, its frozen parameters are frozen here too.
    Frozen parameters get zero updates and no optimizer state.
    """
    recipe = get_recipe(recipe)
    frozen, train_only = (), ()
    if train_cfg is not None:
        frozen, train_only = train_cfg.frozen_patterns, train_cfg.train_only
    table = param_groups(params, model_cfg, recipe, frozen, train_only)
    factor = lr_factor_schedule(recipe, total_steps)
    steps = []
    if recipe.grad_clip_norm is not None:
        steps.append(clip_by_global_norm(recipe.grad_clip_norm))
    steps += [
        optax.scale_by_adam(b1=recipe.b1, b2=recipe.b2, eps=recipe.eps),
        # Decoupled weight decay, scaled by the learning rate like torch's AdamW.
        _per_leaf(lambda u, p, wd: u + wd * p if wd else u,
                  {n: g.weight_decay for n, g in table.items()}),
        _per_leaf(lambda u, p, lr: u * lr, {n: g.lr for n, g in table.items()}),
        optax.scale_by_schedule(lambda step: -factor(step)),
    ]
    opt = optax.chain(*steps)
    labels = groups.map_named(lambda n, x: "frozen" if table[n].frozen else "trained", params)
    if any(g.frozen for g in table.values()):
        opt = optax.multi_transform({"trained": opt, "frozen": optax.set_to_zero()}, labels)
    if recipe.grad_accum_steps > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=recipe.grad_accum_steps)
        opt = opt.gradient_transformation()
    return opt
