"""Test videos for the memory-policy reference runs (scripts/reference/ makes the same ones)."""

from __future__ import annotations

import numpy as np


def distractor_video(num_frames: int, h: int = 150, w: int = 211):
    """A target and a look-alike on a flat background: two discs of real texture (cut from
    scikit-image's astronaut) drifting towards each other. Returns (frames [T, H, W, 3]
    uint8, the target's first-frame mask [H, W] bool).

    With re-drawn weights the decoder's masks follow texture, so on a flat background they
    are compact, and one of the alternative masks can take in the look-alike: the situation
    DAM4SAM's distractor memory is for."""
    from skimage import data

    img = data.astronaut().astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    r_t, r_d = 0.15 * h, 0.13 * h
    for t in range(num_frames):
        frame = np.full((h, w, 3), 118.0, np.float32)
        for (cy, cx, r, sy, sx) in ((0.5 * h, 0.28 * w + 1.5 * t, r_t, 90, 190),
                                    (0.42 * h, 0.75 * w - 1.0 * t, r_d, 115, 215)):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            py, px = sy + (yy - int(cy)), sx + (xx - int(cx))
            inside = disc & (py >= 0) & (py < img.shape[0]) & (px >= 0) & (px < img.shape[1])
            frame[inside] = img[py[inside], px[inside]]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    cy, cx = 0.5 * h, 0.28 * w
    prompt = (yy - cy) ** 2 + (xx - cx) ** 2 <= r_t * r_t
    return np.stack(frames), prompt


def shift_mask_logits_(decoder, shift: float) -> None:
    """Add `shift` to every mask logit of an official `MaskDecoder` (in place), by holding
    one channel of its upscaled embedding at GELU(1) (its stride-4 feature projection gives 1
    there, the last transposed convolution 0) and giving every hypernetwork the constant
    weight shift / GELU(1) on it. Re-drawn weights make masks that cover most of a frame; a
    negative shift makes them compact, as masks of real objects are."""
    import math

    import torch

    gelu1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    c = 0
    with torch.no_grad():
        last_up = decoder.output_upscaling[3]
        last_up.weight[:, c] = 0
        last_up.bias[c] = 0
        decoder.conv_s0.weight[c] = 0
        decoder.conv_s0.bias[c] = 1.0
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight[c] = 0
            mlp.layers[-1].bias[c] = shift / gelu1


# The DAM4SAM reference run's weights: tests/official.py's re-drawn tensors, then these.
DAM4SAM_OBJ_SHIFT, DAM4SAM_IOU_SHIFT, DAM4SAM_LOGIT_SHIFT = 3.0, 2.0, -5.0


def dam4sam_weights_(model) -> None:
    """Make a re-drawn official model (SAM2Base or its video predictor) meet DAM4SAM's
    admission rule on `distractor_video`, in place: the object present and the masks
    confident (object-score and IoU head biases raised), the absolute position encodings
    zeroed (re-drawn ones put the strongest mask logits on the frame's border, so every
    mask's box is the whole frame) and the mask logits lowered (compact masks, some frames
    without the target)."""
    import torch

    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += DAM4SAM_OBJ_SHIFT
        model.sam_mask_decoder.iou_prediction_head.layers[-1].bias += DAM4SAM_IOU_SHIFT
        trunk = model.image_encoder.trunk
        trunk.pos_embed.zero_()
        trunk.pos_embed_window.zero_()
        model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.zero_()
    shift_mask_logits_(model.sam_mask_decoder, DAM4SAM_LOGIT_SHIFT)
