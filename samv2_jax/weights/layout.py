"""The parameter tree: which tensors a model has, and how official tensors map onto ours.

Our params are a plain nested dict that mirrors the official module hierarchy: the official
key `image_encoder.trunk.blocks.3.attn.qkv.weight` is `params["image_encoder"]["trunk"]
["blocks"]["3"]["attn"]["qkv"]["weight"]`. Conversion is therefore only a per-tensor
transpose, chosen by `LAYOUT_RULES`, a table of regular expressions over official key names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from samv2_jax.config import SAM2Config

Shape = tuple[int, ...]

# Official keys we deliberately leave out of our params, as {full-match pattern: reason}.
# Every tensor of the eight official checkpoints is used, so there is nothing to drop.
DROPPED_KEYS: dict[str, str] = {}


# --- layouts -------------------------------------------------------------------------------

# layout name -> (torch ndim, permutation taking the torch layout to ours); None keeps it.
LAYOUTS: dict[str, tuple[int | None, tuple[int, ...] | None]] = {
    "keep": (None, None),
    "linear": (2, (1, 0)),  # [out, in] -> [in, out]
    "conv": (4, (2, 3, 1, 0)),  # OIHW -> HWIO (depthwise [C,1,k,k] -> [k,k,1,C])
    "conv_transpose": (4, (2, 3, 0, 1)),  # [in, out, kh, kw] -> [kh, kw, in, out]
    "nchw": (4, (0, 2, 3, 1)),  # [1, C, H, W] -> [1, H, W, C]
}


@dataclass(frozen=True)
class LayoutRule:
    pattern: str
    layout: str
    # How `init_params` draws this tensor: "zeros", "ones", "fan_in" or a normal's std.
    init: str | float

    @property
    def regex(self) -> re.Pattern:
        return _compiled(self.pattern)


_REGEX_CACHE: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    if pattern not in _REGEX_CACHE:
        _REGEX_CACHE[pattern] = re.compile(pattern)
    return _REGEX_CACHE[pattern]


def _slots(offset: int, period: int = 3, count: int = 20) -> str:
    """Indices `offset + period * k` of an nn.Sequential that repeats (conv, norm, act)."""
    return "(?:" + "|".join(str(offset + period * k) for k in range(count)) + ")"


_ATTN = r"(?:q|k|v|out)_proj"
_TWO_WAY_ATTN = (r"(?:layers\.\d+\."
                 r"(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
                 r"|final_attn_token_to_image)")

LAYOUT_RULES: tuple[LayoutRule, ...] = (
    # vectors, the same in both layouts
    LayoutRule(r".+\.bias", "keep", "zeros"),
    LayoutRule(r"image_encoder\.trunk\.blocks\.\d+\.norm[12]\.weight", "keep", "ones"),
    LayoutRule(r"sam_mask_decoder\.transformer\.(?:layers\.\d+\.norm[1-4]|norm_final_attn)\.weight",
               "keep", "ones"),
    LayoutRule(r"memory_attention\.(?:layers\.\d+\.norm[1-3]|norm)\.weight", "keep", "ones"),
    LayoutRule(r"memory_encoder\.fuser\.layers\.\d+\.norm\.weight", "keep", "ones"),
    LayoutRule(r"sam_prompt_encoder\.mask_downscaling\.[14]\.weight", "keep", "ones"),
    LayoutRule(r"sam_mask_decoder\.output_upscaling\.1\.weight", "keep", "ones"),
    LayoutRule(rf"memory_encoder\.mask_downsampler\.encoder\.{_slots(1)}\.weight", "keep", "ones"),
    LayoutRule(r"memory_encoder\.fuser\.layers\.\d+\.gamma", "keep", 1e-6),
    # learned tokens and free tensors: used as stored (rows are tokens, last axis channels)
    LayoutRule(r"sam_prompt_encoder\.(?:point_embeddings\.\d+|not_a_point_embed|no_mask_embed)"
               r"\.weight", "keep", 0.02),
    LayoutRule(r"sam_mask_decoder\.(?:iou_token|mask_tokens|obj_score_token)\.weight", "keep",
               0.02),
    # Random Fourier frequencies: their unit scale sets the positional encoding's bandwidth.
    LayoutRule(r"sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix", "keep", 1.0),
    LayoutRule(r"maskmem_tpos_enc|no_mem_embed|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial",
               "keep", 0.02),
    # nn.Linear
    LayoutRule(r"image_encoder\.trunk\.blocks\.\d+\.(?:attn\.qkv|attn\.proj|mlp\.layers\.\d+|proj)"
               r"\.weight", "linear", "fan_in"),
    LayoutRule(rf"sam_mask_decoder\.transformer\.{_TWO_WAY_ATTN}\.{_ATTN}\.weight", "linear",
               "fan_in"),
    LayoutRule(r"sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.layers\.\d+\.weight", "linear",
               "fan_in"),
    LayoutRule(r"sam_mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head"
               r"|pred_obj_score_head)\.layers\.\d+\.weight", "linear", "fan_in"),
    LayoutRule(r"sam_mask_decoder\.pred_obj_score_head\.weight", "linear", "fan_in"),
    LayoutRule(rf"memory_attention\.layers\.\d+\.(?:self_attn|cross_attn_image)\.{_ATTN}\.weight",
               "linear", "fan_in"),
    LayoutRule(r"memory_attention\.layers\.\d+\.linear[12]\.weight", "linear", "fan_in"),
    # pwconv1/2 are nn.Linear despite their names (the fuser works channels-last there)
    LayoutRule(r"memory_encoder\.fuser\.layers\.\d+\.pwconv[12]\.weight", "linear", "fan_in"),
    LayoutRule(r"obj_ptr_proj(?:\.layers\.\d+)?\.weight", "linear", "fan_in"),
    LayoutRule(r"obj_ptr_tpos_proj\.weight", "linear", "fan_in"),
    # nn.Conv2d
    LayoutRule(r"image_encoder\.trunk\.patch_embed\.proj\.weight", "conv", "fan_in"),
    LayoutRule(r"image_encoder\.neck\.convs\.\d+\.conv\.weight", "conv", "fan_in"),
    LayoutRule(r"sam_prompt_encoder\.mask_downscaling\.[036]\.weight", "conv", "fan_in"),
    LayoutRule(r"sam_mask_decoder\.conv_s[01]\.weight", "conv", "fan_in"),
    LayoutRule(rf"memory_encoder\.mask_downsampler\.encoder\.{_slots(0)}\.weight", "conv",
               "fan_in"),
    LayoutRule(r"memory_encoder\.(?:pix_feat_proj|out_proj)\.weight", "conv", "fan_in"),
    LayoutRule(r"memory_encoder\.fuser\.layers\.\d+\.dwconv\.weight", "conv", "fan_in"),
    LayoutRule(r"mask_downsample\.weight", "conv", "fan_in"),
    # nn.ConvTranspose2d
    LayoutRule(r"sam_mask_decoder\.output_upscaling\.[03]\.weight", "conv_transpose", "fan_in"),
    # channels-first positional embeddings of the trunk
    LayoutRule(r"image_encoder\.trunk\.pos_embed(?:_window)?", "nchw", 0.02),
)


def matching_rules(key: str) -> list[LayoutRule]:
    return [rule for rule in LAYOUT_RULES if rule.regex.fullmatch(key)]


def rule_for(key: str) -> LayoutRule:
    """The one layout rule of an official key; ValueError when none or several match."""
    rules = matching_rules(key)
    if not rules:
        raise ValueError(f"no layout rule for parameter {key!r}: it is not a known SAM 2 tensor")
    if len(rules) > 1:
        raise ValueError(f"parameter {key!r} matches {len(rules)} layout rules: "
                         f"{[r.pattern for r in rules]}")
    return rules[0]


def is_dropped(key: str) -> bool:
    return any(_compiled(p).fullmatch(key) for p in DROPPED_KEYS)


def _permute(key: str, array, inverse: bool):
    ndim, perm = LAYOUTS[rule_for(key).layout]
    if perm is None:
        return array
    if array.ndim != ndim:
        raise ValueError(f"parameter {key!r} should be {ndim}-D, got shape {tuple(array.shape)}")
    if inverse:
        perm = tuple(int(i) for i in np.argsort(perm))
    return array.transpose(perm)


def to_jax_layout(key: str, array):
    """An official tensor (numpy or jax array) in our layout; `key` is its official name."""
    return _permute(key, array, inverse=False)


def to_torch_layout(key: str, array):
    """Inverse of `to_jax_layout`."""
    return _permute(key, array, inverse=True)


def _jax_shape(key: str, shape: Shape) -> Shape:
    _, perm = LAYOUTS[rule_for(key).layout]
    return tuple(shape) if perm is None else tuple(shape[i] for i in perm)


# --- the official tensor list ----------------------------------------------------------------


class _Shapes:
    """Collects official key -> shape in module order."""

    def __init__(self):
        self.shapes: dict[str, Shape] = {}

    def add(self, key: str, *shape: int):
        if key in self.shapes:
            raise AssertionError(f"duplicate key {key}")
        self.shapes[key] = tuple(int(s) for s in shape)

    def linear(self, prefix: str, d_in: int, d_out: int):
        self.add(f"{prefix}.weight", d_out, d_in)
        self.add(f"{prefix}.bias", d_out)

    def conv(self, prefix: str, c_in: int, c_out: int, k: int, groups: int = 1):
        self.add(f"{prefix}.weight", c_out, c_in // groups, k, k)
        self.add(f"{prefix}.bias", c_out)

    def conv_transpose(self, prefix: str, c_in: int, c_out: int, k: int):
        self.add(f"{prefix}.weight", c_in, c_out, k, k)
        self.add(f"{prefix}.bias", c_out)

    def norm(self, prefix: str, dim: int):
        self.add(f"{prefix}.weight", dim)
        self.add(f"{prefix}.bias", dim)

    def mlp(self, prefix: str, d_in: int, hidden: int, d_out: int, num_layers: int):
        dims = [d_in] + [hidden] * (num_layers - 1) + [d_out]
        for i in range(num_layers):
            self.linear(f"{prefix}.layers.{i}", dims[i], dims[i + 1])

    def attention(self, prefix: str, dim: int, internal: int, kv_dim: int | None = None):
        kv_dim = dim if kv_dim is None else kv_dim
        self.linear(f"{prefix}.q_proj", dim, internal)
        self.linear(f"{prefix}.k_proj", kv_dim, internal)
        self.linear(f"{prefix}.v_proj", kv_dim, internal)
        self.linear(f"{prefix}.out_proj", internal, dim)


def _image_encoder(s: _Shapes, cfg: SAM2Config):
    t = cfg.trunk
    p = "image_encoder.trunk"
    s.add(f"{p}.pos_embed", 1, t.embed_dim, *t.window_pos_embed_bkg_spatial_size)
    s.add(f"{p}.pos_embed_window", 1, t.embed_dim, t.window_spec[0], t.window_spec[0])
    s.conv(f"{p}.patch_embed.proj", 3, t.embed_dim, t.patch_kernel)
    for i, b in enumerate(t.block_specs()):
        q = f"{p}.blocks.{i}"
        s.norm(f"{q}.norm1", b.dim)
        s.linear(f"{q}.attn.qkv", b.dim, 3 * b.dim_out)
        s.linear(f"{q}.attn.proj", b.dim_out, b.dim_out)
        s.norm(f"{q}.norm2", b.dim_out)
        s.mlp(f"{q}.mlp", b.dim_out, int(b.dim_out * t.mlp_ratio), b.dim_out, 2)
        if b.dim != b.dim_out:
            s.linear(f"{q}.proj", b.dim, b.dim_out)
    for i, channels in enumerate(t.channel_list):
        s.conv(f"image_encoder.neck.convs.{i}.conv", channels, cfg.neck.d_model, 1)


def _memory_attention(s: _Shapes, cfg: SAM2Config):
    m, d = cfg.memory, cfg.hidden_dim
    for i in range(m.attention_layers):
        q = f"memory_attention.layers.{i}"
        s.attention(f"{q}.self_attn", d, d)
        s.attention(f"{q}.cross_attn_image", d, d, kv_dim=m.mem_dim)
        s.linear(f"{q}.linear1", d, m.attention_feedforward)
        s.linear(f"{q}.linear2", m.attention_feedforward, d)
        for n in (1, 2, 3):
            s.norm(f"{q}.norm{n}", d)
    s.norm("memory_attention.norm", d)


def _memory_encoder(s: _Shapes, cfg: SAM2Config):
    m, d = cfg.memory, cfg.hidden_dim
    p = "memory_encoder"
    # The mask is brought down to the backbone stride in steps of `stride`, each step
    # multiplying the channels by stride**2, then projected to the hidden width.
    steps = round(math.log(cfg.backbone_stride) / math.log(m.mask_downsampler_stride))
    c_in = 1
    for k in range(steps):
        c_out = c_in * m.mask_downsampler_stride**2
        s.conv(f"{p}.mask_downsampler.encoder.{3 * k}", c_in, c_out, m.mask_downsampler_kernel)
        s.norm(f"{p}.mask_downsampler.encoder.{3 * k + 1}", c_out)
        c_in = c_out
    s.conv(f"{p}.mask_downsampler.encoder.{3 * steps}", c_in, d, 1)
    s.conv(f"{p}.pix_feat_proj", d, d, 1)
    for i in range(m.fuser_layers):
        q = f"{p}.fuser.layers.{i}"
        s.add(f"{q}.gamma", d)
        s.conv(f"{q}.dwconv", d, d, m.fuser_kernel, groups=d)
        s.norm(f"{q}.norm", d)
        s.linear(f"{q}.pwconv1", d, 4 * d)
        s.linear(f"{q}.pwconv2", 4 * d, d)
    if m.mem_dim != d:
        s.conv(f"{p}.out_proj", d, m.mem_dim, 1)


def _prompt_encoder(s: _Shapes, cfg: SAM2Config):
    d, c = cfg.hidden_dim, cfg.mask_in_chans
    p = "sam_prompt_encoder"
    s.add(f"{p}.pe_layer.positional_encoding_gaussian_matrix", 2, d // 2)
    for i in range(4):  # negative/positive point, box corner 1/2
        s.add(f"{p}.point_embeddings.{i}.weight", 1, d)
    s.add(f"{p}.not_a_point_embed.weight", 1, d)
    s.conv(f"{p}.mask_downscaling.0", 1, c // 4, 2)
    s.norm(f"{p}.mask_downscaling.1", c // 4)
    s.conv(f"{p}.mask_downscaling.3", c // 4, c, 2)
    s.norm(f"{p}.mask_downscaling.4", c)
    s.conv(f"{p}.mask_downscaling.6", c, d, 1)
    s.add(f"{p}.no_mask_embed.weight", 1, d)


def _mask_decoder(s: _Shapes, cfg: SAM2Config):
    dec, d = cfg.decoder, cfg.hidden_dim
    p = "sam_mask_decoder"
    cross = d // dec.attention_downsample_rate
    for i in range(dec.transformer_depth):
        q = f"{p}.transformer.layers.{i}"
        s.attention(f"{q}.self_attn", d, d)
        s.norm(f"{q}.norm1", d)
        s.attention(f"{q}.cross_attn_token_to_image", d, cross)
        s.norm(f"{q}.norm2", d)
        s.mlp(f"{q}.mlp", d, dec.transformer_mlp_dim, d, 2)
        s.norm(f"{q}.norm3", d)
        s.norm(f"{q}.norm4", d)
        s.attention(f"{q}.cross_attn_image_to_token", d, cross)
    s.attention(f"{p}.transformer.final_attn_token_to_image", d, cross)
    s.norm(f"{p}.transformer.norm_final_attn", d)
    num_masks = dec.num_multimask_outputs + 1
    s.add(f"{p}.iou_token.weight", 1, d)
    s.add(f"{p}.mask_tokens.weight", num_masks, d)
    if dec.pred_obj_scores:
        s.add(f"{p}.obj_score_token.weight", 1, d)
    s.conv_transpose(f"{p}.output_upscaling.0", d, d // 4, 2)
    s.norm(f"{p}.output_upscaling.1", d // 4)
    s.conv_transpose(f"{p}.output_upscaling.3", d // 4, d // 8, 2)
    if dec.use_high_res_features:
        s.conv(f"{p}.conv_s0", d, d // 8, 1)
        s.conv(f"{p}.conv_s1", d, d // 4, 1)
    for i in range(num_masks):
        s.mlp(f"{p}.output_hypernetworks_mlps.{i}", d, d, d // 8, 3)
    s.mlp(f"{p}.iou_prediction_head", d, dec.iou_head_hidden_dim, num_masks, dec.iou_head_depth)
    if dec.pred_obj_scores:
        if dec.pred_obj_scores_mlp:
            s.mlp(f"{p}.pred_obj_score_head", d, d, 1, 3)
        else:
            s.linear(f"{p}.pred_obj_score_head", d, 1)


def official_param_shapes(cfg: SAM2Config) -> dict[str, Shape]:
    """Every tensor of an official state dict for `cfg`, with its shape in the torch layout."""
    m, d = cfg.memory, cfg.hidden_dim
    s = _Shapes()
    s.add("maskmem_tpos_enc", m.num_maskmem, 1, 1, m.mem_dim)
    s.add("no_mem_embed", 1, 1, d)
    s.add("no_mem_pos_enc", 1, 1, d)
    if cfg.decoder.pred_obj_scores and m.use_obj_ptrs_in_encoder:
        s.add("no_obj_ptr", 1, d)
    if m.no_obj_embed_spatial:
        s.add("no_obj_embed_spatial", 1, m.mem_dim)
    _image_encoder(s, cfg)
    if m.use_obj_ptrs_in_encoder:
        s.conv("mask_downsample", 1, 1, 4)
    _memory_attention(s, cfg)
    _memory_encoder(s, cfg)
    _prompt_encoder(s, cfg)
    _mask_decoder(s, cfg)
    if m.use_obj_ptrs_in_encoder:
        if m.use_mlp_for_obj_ptr_proj:
            s.mlp("obj_ptr_proj", d, d, d, 3)
        else:
            s.linear("obj_ptr_proj", d, d)
    if m.proj_tpos_enc_in_obj_ptrs:
        s.linear("obj_ptr_tpos_proj", d, m.mem_dim)
    return s.shapes


def jax_param_shapes(cfg: SAM2Config) -> dict[str, Any]:
    """Nested dict of the shapes of our params for `cfg`."""
    flat = {k: _jax_shape(k, v) for k, v in official_param_shapes(cfg).items() if not is_dropped(k)}
    return unflatten(flat)


def count_params(params) -> int:
    return int(sum(np.prod(np.shape(x)) for x in flatten(params).values()))


# --- flat <-> nested ---------------------------------------------------------------------------


def _is_leaf(x) -> bool:
    return not isinstance(x, Mapping)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b.c": x} -> {"a": {"b": {"c": x}}}."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"key {key!r} nests under {'.'.join(parents[: i + 1])!r}, "
                                 "which is itself a tensor")
            node = child
        if leaf in node:
            raise ValueError(f"key {key!r} is both a tensor and a prefix of other keys")
        node[leaf] = value
    return tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": {"c": x}}} -> {"a.b.c": x}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if _is_leaf(value):
            flat[name] = value
        else:
            flat.update(flatten(value, name + "."))
    return flat


# --- official <-> ours -------------------------------------------------------------------------


def from_official(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Official flat tensors -> our nested params (no validation; see convert/ for that)."""
    return unflatten({k: to_jax_layout(k, v) for k, v in state_dict.items() if not is_dropped(k)})


def to_official(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our params -> official flat numpy tensors (e.g. to load into the torch model)."""
    return {k: np.asarray(to_torch_layout(k, np.asarray(v))) for k, v in flatten(params).items()}


def init_params(cfg: SAM2Config, rng_key, dtype=None) -> dict[str, Any]:
    """Random params of the right shapes: unit norms, zero biases, 1/sqrt(fan_in) weights.

    Meant for tests and for training from scratch. One normal draw covers every tensor (in
    sorted key order), so the same `rng_key` always gives the same params, and there is one
    random op to compile rather than one per tensor shape.
    """
    import jax
    import jax.numpy as jnp

    dtype = jnp.float32 if dtype is None else dtype
    shapes = {k: v for k, v in sorted(official_param_shapes(cfg).items()) if not is_dropped(k)}
    drawn = [k for k in shapes if rule_for(k).init not in ("zeros", "ones")]
    total = sum(int(np.prod(shapes[k])) for k in drawn)
    noise = np.asarray(jax.random.normal(rng_key, (total,), jnp.float32))
    flat, offset = {}, 0
    for name, torch_shape in shapes.items():
        rule = rule_for(name)
        shape = _jax_shape(name, torch_shape)
        if rule.init == "zeros":
            value = np.zeros(shape, np.float32)
        elif rule.init == "ones":
            value = np.ones(shape, np.float32)
        else:
            size = int(np.prod(shape))
            if rule.init == "fan_in":
                std = 1.0 / math.sqrt(max(_fan_in(rule.layout, torch_shape), 1))
            else:
                std = float(rule.init)
            value = std * noise[offset: offset + size].reshape(shape)
            offset += size
        flat[name] = jnp.asarray(value, dtype=dtype)
    return unflatten(flat)


def _fan_in(layout: str, torch_shape: Shape) -> int:
    if layout == "conv_transpose":  # [in, out, kh, kw]: each output sees `in` channels
        return torch_shape[0]
    return int(np.prod(torch_shape[1:]))

