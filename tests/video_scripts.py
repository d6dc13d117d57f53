"""Shared by the video tests: a textured test video and interaction scripts that run the same
way on the official predictor and on ours."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def make_frames(num_frames: int = 12, h: int = 150, w: int = 211, step: int = 6):
    """[T, H, W, 3] uint8: a window sliding over scikit-image's astronaut (real texture), so
    objects move from frame to frame."""
    from skimage import data

    base = data.astronaut()
    frames = []
    for t in range(num_frames):
        y, x = 60 + t * step // 2, 80 + t * step
        crop = base[y:y + 2 * h, x:x + 2 * w]
        frames.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR)))
    return np.stack(frames)


def write_jpeg_folder(frames, folder) -> str:
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, f"{i:05d}.jpg"), quality=95)
    return str(folder)


def disk_mask(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _np(x):
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def play(pred, state, script):
    """Run `script` (a list of (op, kwargs)) on a predictor; returns the list of outputs as
    (label, frame_idx, obj_ids, masks [O, 1, H, W] numpy)."""
    results = []
    for op, kw in script:
        if op == "points":
            f, ids, masks = pred.add_new_points_or_box(state, **kw)
            results.append((f"points@{kw['frame_idx']}", f, list(ids), _np(masks)))
        elif op == "mask":
            f, ids, masks = pred.add_new_mask(state, **kw)
            results.append((f"mask@{kw['frame_idx']}", f, list(ids), _np(masks)))
        elif op == "propagate":
            for f, ids, masks in pred.propagate_in_video(state, **kw):
                results.append((f"propagate{kw}", f, list(ids), _np(masks)))
        elif op == "clear":
            f, ids, masks = pred.clear_all_prompts_in_frame(state, **kw)
            results.append((f"clear@{kw['frame_idx']}", f, list(ids), _np(masks)))
        elif op == "remove":
            ids, updated = pred.remove_object(state, **kw)
            results.append(("remove", -1, list(ids), None))
            for f, masks in updated:
                results.append(("remove-updated", f, list(ids), _np(masks)))
        elif op == "reset":
            pred.reset_state(state)
        else:
            raise ValueError(op)
    return results


def main_script(h: int, w: int):
    """Two objects prompted on different frames (points; a box with a click), propagation,
    a correction click after it and propagating again, reverse propagation from a middle
    frame, removing an object and propagating a few frames."""
    return [
        ("points", dict(frame_idx=0, obj_id=1, points=[[0.45 * w, 0.4 * h]], labels=[1])),
        ("points", dict(frame_idx=3, obj_id=7, box=[0.1 * w, 0.5 * h, 0.5 * w, 0.95 * h],
                        points=[[0.3 * w, 0.7 * h]], labels=[0])),
        ("propagate", dict()),
        ("points", dict(frame_idx=7, obj_id=1, points=[[0.6 * w, 0.3 * h]], labels=[1],
                        clear_old_points=False)),
        ("propagate", dict()),
        ("propagate", dict(start_frame_idx=6, reverse=True)),
        ("remove", dict(obj_id=7)),
        ("propagate", dict(start_frame_idx=2, max_frame_num_to_track=4)),
    ]


def single_script(h: int, w: int):
    """One object from one click, tracked through the whole video."""
    return main_script(h, w)[:1] + [("propagate", dict())]


def short_script(h: int, w: int):
    """The first part of `main_script`: two objects, one propagation."""
    return main_script(h, w)[:3]


def mask_script(h: int, w: int):
    """A mask prompt, a second object by points on a later frame, clearing prompts on a
    frame, and starting over after reset_state."""
    return [
        ("mask", dict(frame_idx=2, obj_id=3, mask=disk_mask(h, w, 0.45 * h, 0.5 * w, 0.2 * h))),
        ("points", dict(frame_idx=5, obj_id=4, points=[[0.2 * w, 0.2 * h], [0.25 * w, 0.3 * h]],
                        labels=[1, 1])),
        ("propagate", dict()),
        ("clear", dict(frame_idx=5, obj_id=4)),
        ("points", dict(frame_idx=5, obj_id=4, points=[[0.5 * w, 0.5 * h]], labels=[1])),
        ("propagate", dict(start_frame_idx=8, reverse=True)),
        ("reset", dict()),
        ("points", dict(frame_idx=4, obj_id=2, points=[[0.5 * w, 0.6 * h]], labels=[1])),
        ("propagate", dict(start_frame_idx=4)),
    ]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# Re-drawn weights leave the object score near zero; this shift of the score head's bias
# makes objects present, so the masks being compared are real ones.
PRESENT = 3.0


def ours_for(official_pred, **kwargs):
    from samv2_jax import Model, SAM2VideoPredictor
    from samv2_jax.weights.official import convert_state_dict

    sd = {k: v.detach().cpu().numpy() for k, v in official_pred.state_dict().items()}
    cfg, params = convert_state_dict(sd, image_size=official_pred.image_size)
    return SAM2VideoPredictor(Model(cfg, params), **kwargs)
