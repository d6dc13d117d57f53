"""Fine-tuning SAM 2 with optax: the official training objective as pure functions.

- `TrainConfig` / `LossConfig`: the official `SAM2Train` and loss options (recipe defaults).
- `forward_clip(params, model_cfg, train_cfg, batch, key)`: the training forward over a clip
  (prompt simulation, correction clicks, tracking from memory in training mode).
- `loss_fn(params, batch, key, *, model_cfg, train_cfg) -> (loss, aux)`: the official
  `MultiStepMultiMasksAndIous`; `jax.value_and_grad(loss_fn, has_aux=True)` is the step.
- `make_optimizer(params, model_cfg, recipe, total_steps)`: the official optimizer recipe
  (AdamW, layer-wise lr decay, weight-decay groups, clipping, cosine schedule) in optax.
"""

from samv2_jax.train.config import LossConfig, TrainConfig, training_model_config
from samv2_jax.train.forward import forward_clip
from samv2_jax.train.loss import loss_fn
from samv2_jax.train.optimizer import make_optimizer

__all__ = ["LossConfig", "TrainConfig", "forward_clip", "loss_fn", "make_optimizer",
           "training_model_config"]
