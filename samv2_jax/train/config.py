"""Static training configuration: what one training step computes (prompt simulation, loss
weights, regularisation, memory and precision switches).

`TrainConfig` mirrors the options of the official `training.model.sam2.SAM2Train` (training
mode) with the defaults of the official fine-tuning recipe
`sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml`, and `LossConfig` those of its
`MultiStepMultiMasksAndIous`. Both are frozen and hashable: pass them as static arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from samv2_jax.config import SAM2Config

# Parts of the model whose intermediate activations can be recomputed in the backward pass
# instead of kept (jax.checkpoint): every Hiera block, every memory-attention layer, every
# decoder step of the correction loop, and the whole per-frame step of the tracking scan
# (then only the memory bank is kept per frame).
REMAT_PARTS = ("hiera_blocks", "memory_attention_layers", "decoder_steps", "frame_step")
# The names in `jax.checkpoint_policies` a `remat_policy` may take.
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")
COMPUTE_DTYPES = ("float32", "bfloat16")
# Tensors of the param tree that the official model holds as buffers, not parameters: they
# are never trained (no gradient, no update).
BUFFERS = ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",)


@dataclass(frozen=True)
class LossConfig:
    """Official `training.loss_fns.MultiStepMultiMasksAndIous`, recipe values."""

    weight_mask: float = 20.0   # focal loss
    weight_dice: float = 1.0
    weight_iou: float = 1.0
    weight_class: float = 1.0   # object score
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Regress the IoU of all multimask outputs (True) or only of the one with the lowest loss.
    supervise_all_iou: bool = True
    iou_use_l1_loss: bool = True
    pred_obj_scores: bool = True
    focal_alpha_obj_score: float = -1.0
    focal_gamma_obj_score: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Official `SAM2Train` training-mode options (recipe defaults), plus our switches.

    Prompt simulation on a clip of T frames (shared by every object of the batch, as the
    official draws it once per batch): with probability `prob_to_use_pt_input_for_train` the
    initial conditioning frames get a point prompt (a noisy GT box with probability
    `prob_to_use_box_input_for_train`, else one click inside the GT mask) and some frames
    get `num_correction_pt_per_frame` correction clicks; otherwise they get the GT mask.
    """

    prob_to_use_pt_input_for_train: float = 0.5
    prob_to_use_box_input_for_train: float = 0.5
    num_frames_to_correct_for_train: int = 2
    rand_frames_to_correct_for_train: bool = True
    num_init_cond_frames_for_train: int = 2
    rand_init_cond_frames_for_train: bool = True
    num_correction_pt_per_frame: int = 7
    # "uniform": clicks drawn uniformly from the error region (the official training mode
    # always samples this way; "center" is an evaluation-only method there).
    pt_sampling_for_train: str = "uniform"
    pt_sampling_for_eval: str = "uniform"
    prob_to_sample_from_gt_for_train: float = 0.1
    add_all_frames_to_correct_as_cond: bool = True
    freeze_image_encoder: bool = False
    # Further frozen parameters, as fnmatch patterns over dotted names ("sam_mask_decoder.*").
    # Frozen parameters get no gradient at all (stop_gradient before use).
    freeze: tuple[str, ...] = ()
    # When not empty, only the parameters these patterns name are trained (e.g.
    # ("sam_prompt_encoder.*", "sam_mask_decoder.*") for decoder-only fine-tuning).
    train_only: tuple[str, ...] = ()
    # Regularisation of the recipe: stochastic depth in the Hiera trunk (rates rising
    # linearly from 0 to this over the blocks) and dropout in memory attention.
    drop_path_rate: float = 0.1
    memory_attention_dropout: float = 0.1
    # Memory and precision.
    remat: tuple[str, ...] = ()
    remat_policy: str = "nothing_saveable"
    # Frames the image encoder takes per call: None, every frame of the batch at once (as the
    # official); k, a loop over groups of k frames, so that the encoder's backward pass holds
    # one group's working buffers instead of the batch's (the values do not change).
    encoder_frames_per_call: int | None = None
    compute_dtype: str = "float32"
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        for name in ("prob_to_use_pt_input_for_train", "prob_to_use_box_input_for_train",
                     "prob_to_sample_from_gt_for_train"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        for name in ("drop_path_rate", "memory_attention_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        if self.num_init_cond_frames_for_train < 1:
            raise ValueError("num_init_cond_frames_for_train must be >= 1 (the first frame is "
                             f"always prompted), got {self.num_init_cond_frames_for_train}")
        if (self.prob_to_use_pt_input_for_train > 0
                and self.num_frames_to_correct_for_train < self.num_init_cond_frames_for_train):
            raise ValueError(
                "num_frames_to_correct_for_train must be >= num_init_cond_frames_for_train "
                "when point inputs are used (every initial conditioning frame is corrected), "
                f"got {self.num_frames_to_correct_for_train} < "
                f"{self.num_init_cond_frames_for_train}")
        if self.num_correction_pt_per_frame < 0:
            raise ValueError("num_correction_pt_per_frame must be >= 0, got "
                             f"{self.num_correction_pt_per_frame}")
        if self.pt_sampling_for_train != "uniform":
            raise ValueError(f"pt_sampling_for_train={self.pt_sampling_for_train!r}: training "
                             "samples clicks uniformly from the error region ('uniform'), as "
                             "the official training mode does")
        if self.pt_sampling_for_eval not in ("uniform", "center"):
            raise ValueError("pt_sampling_for_eval must be 'uniform' or 'center', got "
                             f"{self.pt_sampling_for_eval!r}")
        if any(isinstance(x, str) for x in (self.freeze, self.train_only, self.remat)):
            raise ValueError("freeze, train_only and remat are tuples of names, e.g. "
                             "('image_encoder.*',) and ('hiera_blocks',), not a single string")
        unknown = set(self.remat) - set(REMAT_PARTS)
        if unknown:
            raise ValueError(f"unknown remat parts {sorted(unknown)}; choose from {REMAT_PARTS}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; choose from "
                             f"{REMAT_POLICIES}")
        if self.encoder_frames_per_call is not None and self.encoder_frames_per_call < 1:
            raise ValueError("encoder_frames_per_call must be >= 1 (or None: all frames at "
                             f"once), got {self.encoder_frames_per_call}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got "
                             f"{self.compute_dtype!r}")

    @property
    def frozen_patterns(self) -> tuple[str, ...]:
        """Every frozen-parameter pattern: the official buffers, the image encoder when it is
        frozen, and `freeze`."""
        extra = ("image_encoder.*",) if self.freeze_image_encoder else ()
        return BUFFERS + extra + tuple(self.freeze)

    @property
    def num_steps_per_frame(self) -> int:
        """Decoder steps a corrected frame gets: the first prediction plus one per click."""
        return 1 + self.num_correction_pt_per_frame

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def deterministic(self) -> TrainConfig:
        """The same objective without dropout or stochastic depth."""
        return self.replace(drop_path_rate=0.0, memory_attention_dropout=0.0)


def training_model_config(cfg: SAM2Config) -> SAM2Config:
    """The model config as the official model behaves in training mode (`model.train()`):
    memory frames at stride 1, object pointers of prompted frames in the future allowed, no
    hard memory mask for clicked frames, and the decoder's single-mask output never swapped
    for a multimask one by stability (the official checks `self.training` for each)."""
    memory = dataclasses.replace(cfg.memory, memory_temporal_stride_for_eval=1,
                                 only_obj_ptrs_in_the_past_for_eval=False,
                                 binarize_mask_from_pts_for_mem_enc=False,
                                 non_overlap_masks_for_mem_enc=False)
    decoder = dataclasses.replace(cfg.decoder, dynamic_multimask_via_stability=False)
    return cfg.replace(memory=memory, decoder=decoder)
