"""Static model configuration: frozen, hashable dataclasses usable as jit static args.

One `SAM2Config` describes any of the eight official models. Presets carry the official
names (`sam2.1_hiera_tiny`, ...); `config_from_state_dict` recognises a checkpoint's model
from its tensors alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    # Window size per stage; a stage's first block still uses the previous stage's size.
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    patch_kernel: int = 7
    patch_stride: int = 4
    patch_padding: int = 3

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        return tuple(sum(self.stages[: i + 1]) - 1 for i in range(len(self.stages)))

    @property
    def q_pool_blocks(self) -> tuple[int, ...]:
        return tuple(e + 1 for e in self.stage_ends[:-1])[: self.q_pool]

    def block_specs(self) -> tuple[HieraBlockSpec, ...]:
        """Per-block dims, heads, window size and pooling, derived like the official trunk."""
        specs = []
        dim, heads, stage = self.embed_dim, self.num_heads, 0
        for i in range(self.depth):
            dim_out = dim
            window = 0 if i in self.global_att_blocks else self.window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * self.dim_mul)
                heads = int(heads * self.head_mul)
                stage += 1
            specs.append(
                HieraBlockSpec(
                    dim=dim,
                    dim_out=dim_out,
                    num_heads=heads,
                    window_size=window,
                    q_stride=self.q_stride if i in self.q_pool_blocks else None,
                )
            )
            dim = dim_out
        return tuple(specs)

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels of each stage, coarsest first (the neck's order)."""
        specs = self.block_specs()
        return tuple(specs[e].dim_out for e in self.stage_ends[::-1])


@dataclass(frozen=True)
class HieraBlockSpec:
    dim: int
    dim_out: int
    num_heads: int
    window_size: int
    q_stride: tuple[int, int] | None


@dataclass(frozen=True)
class NeckConfig:
    d_model: int = 256
    # Levels (0 = finest) that receive top-down features; the others are lateral only.
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    fuse_type: str = "sum"
    # Number of coarsest levels dropped from the output.
    scalp: int = 1
    pos_temperature: float = 10000.0


@dataclass(frozen=True)
class MaskDecoderConfig:
    num_multimask_outputs: int = 3
    transformer_depth: int = 2
    transformer_num_heads: int = 8
    transformer_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    use_high_res_features: bool = True
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    # Official builders switch these on by default (`apply_postprocessing=True`).
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class MemoryConfig:
    """Video-only parts: memory encoder, memory attention and the tracking options."""

    mem_dim: int = 64
    num_maskmem: int = 7
    attention_layers: int = 4
    attention_feedforward: int = 2048
    attention_num_heads: int = 1
    rope_theta: float = 10000.0
    mask_downsampler_kernel: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    fuser_layers: int = 2
    fuser_kernel: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    no_obj_embed_spatial: bool = True


@dataclass(frozen=True)
class SAM2Config:
    name: str = "sam2.1_hiera_tiny"
    version: str = "2.1"
    image_size: int = 1024
    backbone_stride: int = 16
    hidden_dim: int = 256
    mask_in_chans: int = 16
    trunk: HieraConfig = field(default_factory=HieraConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self):
        if self.image_size <= 0 or self.image_size % 32 != 0:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (the trunk downsamples by 32 and "
                f"the FPN doubles back up), got {self.image_size}; try 1024, 512 or 256."
            )

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 image embedding (64 at 1024)."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's mask logits and of a mask prompt (256 at 1024)."""
        return 4 * self.embedding_size

    def replace(self, **changes) -> SAM2Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SAM2Config:
        d = dict(d)
        sub = {"trunk": HieraConfig, "neck": NeckConfig, "decoder": MaskDecoderConfig,
               "memory": MemoryConfig}
        for key, klass in sub.items():
            if key in d:
                d[key] = _dataclass_from_dict(klass, d[key])
        return _dataclass_from_dict(cls, d)


def _dataclass_from_dict(klass, d: Mapping):
    names = {f.name: f for f in dataclasses.fields(klass)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"unknown {klass.__name__} fields {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = tuple(_tuplify(x) for x in v) if isinstance(v, list) else v
    return klass(**kwargs)


def _tuplify(x):
    return tuple(x) if isinstance(x, list) else x


# --- presets -------------------------------------------------------------------------------

_TRUNKS = {
    "tiny": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2),
                        global_att_blocks=(5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2),
                         global_att_blocks=(7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": HieraConfig(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                             global_att_blocks=(12, 16, 20),
                             window_pos_embed_bkg_spatial_size=(14, 14)),
    "large": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4),
                         global_att_blocks=(23, 33, 43), window_spec=(8, 4, 16, 8),
                         window_pos_embed_bkg_spatial_size=(7, 7)),
}

# SAM 2.0 checkpoints predate these three memory options.
_V20_MEMORY = MemoryConfig(no_obj_embed_spatial=False, add_tpos_enc_to_obj_ptrs=False,
                           proj_tpos_enc_in_obj_ptrs=False, use_signed_tpos_enc_to_obj_ptrs=False)

SIZES = tuple(_TRUNKS)
VERSIONS = ("2.0", "2.1")


def preset_name(version: str, size: str) -> str:
    return f"sam2_hiera_{size}" if version == "2.0" else f"sam2.1_hiera_{size}"


PRESETS: dict[str, SAM2Config] = {}
for _size, _trunk in _TRUNKS.items():
    for _version in VERSIONS:
        _name = preset_name(_version, _size)
        PRESETS[_name] = SAM2Config(
            name=_name, version=_version, trunk=_trunk,
            memory=_V20_MEMORY if _version == "2.0" else MemoryConfig(),
        )


def get_config(name: str, image_size: int | None = None) -> SAM2Config:
    """Preset by official name (`sam2.1_hiera_tiny`, `sam2_hiera_large`, ...)."""
    key = name.replace("-", "_").replace("b+", "base_plus")
    key = key.replace("hiera_t.", "hiera_tiny.")  # tolerate config-file style names
    if key.endswith(".yaml"):
        key = key[: -len(".yaml")]
    short = {"t": "tiny", "s": "small", "l": "large"}
    head, _, tail = key.rpartition("_")
    if tail in short:
        key = f"{head}_{short[tail]}"
    if key not in PRESETS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(PRESETS)}")
    cfg = PRESETS[key]
    return cfg if image_size is None else cfg.replace(image_size=image_size)


# --- inference from a checkpoint -------------------------------------------------------------


def config_from_state_dict(shapes: Mapping[str, tuple],
                           image_size: int | None = None) -> SAM2Config:
    """Recognise which official model a state dict holds, from its key names and shapes.

    `shapes` maps official key names to tensor shapes (a state dict works too: anything with
    a `.shape`). Raises ValueError when the tensors match none of the eight models.
    """
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in shapes.items()}
    patch = shapes.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        raise ValueError(
            "not a SAM 2 checkpoint: it has no 'image_encoder.trunk.patch_embed.proj.weight' "
            f"(first keys: {list(shapes)[:5]})"
        )
    embed_dim = patch[0]
    stages, prev_dim, count, i = [], embed_dim, 0, 0
    while f"image_encoder.trunk.blocks.{i}.norm2.weight" in shapes:
        dim_out = shapes[f"image_encoder.trunk.blocks.{i}.norm2.weight"][0]
        if dim_out != prev_dim:
            stages.append(count)
            count = 0
            prev_dim = dim_out
        count += 1
        i += 1
    stages.append(count)
    version = "2.1" if "no_obj_embed_spatial" in shapes else "2.0"
    for size, trunk in _TRUNKS.items():
        if trunk.embed_dim == embed_dim and tuple(stages) == trunk.stages:
            return get_config(preset_name(version, size), image_size)
    raise ValueError(
        f"the checkpoint's image encoder (embed_dim={embed_dim}, blocks per stage={tuple(stages)}) "
        "matches none of the official SAM 2 models (hiera tiny, small, base_plus, large)"
    )
