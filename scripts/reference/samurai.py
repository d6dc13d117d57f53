"""Reference outputs of SAMURAI (yangchris11/samurai) for tests/tracking/policies/
test_mem_reference.py.

Usage: python scripts/reference/samurai.py /path/to/samurai [out.npz]

The path is a local copy of the SAMURAI repository (its `sam2/` folder is a modified SAM 2
package; it needs loguru and scipy). This script imports that package instead of PyPI's
`sam2`, builds its video predictor from configs/samurai/sam2.1_hiera_t.yaml at 256 with every
tensor re-drawn as tests/official.py does (same seed, same object-score shift), tracks a box
on the test video (tests/video_scripts.make_frames) and stores, per frame, the mask logits at
the model's mask size (float32; the test upsamples them to the video as the reference does
for its output), the chosen mask's predicted IoU, the motion score, the Kalman state and the
stable-frame count, plus a checksum of every tensor so the test can tell it rebuilt the same
weights.
`stable_frames_threshold` is lowered to 3 (a config setting of SAMURAI) so that the short
clip reaches the motion-weighted phase.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SIZE, T, H, W = 256, 10, 150, 211
STABLE = 3
BOX = [0.25 * W, 0.2 * H, 0.7 * W, 0.75 * H]


def main():
    ref = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests/data/samurai_reference.npz"
    sys.path.insert(0, str(ref / "sam2"))
    sys.path.insert(1, str(ROOT / "tests"))
    import torch

    import official  # randomize_ and the torchvision stand-in (no sam2 import at module level)
    import video_scripts as vs

    official.install_torchvision_standin()
    import sam2
    assert str(ref) in sam2.__file__, sam2.__file__
    from sam2.build_sam import build_sam2_video_predictor

    pred = build_sam2_video_predictor(
        "configs/samurai/sam2.1_hiera_t.yaml", None, device="cpu", mode="eval",
        hydra_overrides_extra=[f"++model.image_size={SIZE}",
                               f"++model.stable_frames_threshold={STABLE}"])
    official.randomize_(pred, 0)
    pred.eval()
    pred.fill_hole_area = 0  # its hole filling needs a CUDA extension
    with torch.no_grad():
        pred.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += vs.PRESENT
    pred.memory_attention.forward = official._memory_as_float32(pred.memory_attention.forward)
    checksum = np.array([float(v.double().abs().sum()) for v in pred.state_dict().values()])

    frames = vs.make_frames(T, H, W)
    with tempfile.TemporaryDirectory() as tmp:
        folder = vs.write_jpeg_folder(frames, Path(tmp) / "frames")
        state = pred.init_state(folder)
        _, _, first = pred.add_new_points_or_box(state, box=BOX, frame_idx=0, obj_id=1)
        ious, kf, kf_ok, means, stable = [np.nan], [0.0], [False], [np.zeros(8)], [0]
        low = [None]
        for f, _, m in pred.propagate_in_video(state):
            if f == 0:
                low[0] = state["output_dict"]["cond_frame_outputs"][0]["pred_masks"]
                continue
            o = state["output_dict"]["non_cond_frame_outputs"][f]
            low.append(o["pred_masks"])
            # the video-resolution output is this low-resolution mask upsampled
            up = torch.nn.functional.interpolate(o["pred_masks"], size=(H, W), mode="bilinear",
                                                 align_corners=False)
            assert torch.equal(up, m), f
            ious.append(float(o["best_iou_score"]))
            score = o.get("kf_score")
            kf.append(0.0 if score is None else float(score))
            kf_ok.append(score is not None)
            means.append(np.asarray(pred.kf_mean, np.float64))
            stable.append(int(pred.stable_frames))
    low = np.stack([x[0, 0].numpy() for x in low]).astype(np.float32)
    assert torch.equal(torch.nn.functional.interpolate(torch.from_numpy(low[:1])[None], (H, W),
                                                       mode="bilinear", align_corners=False),
                       first)
    np.savez_compressed(out, low_res=low, video_hw=np.array([H, W]), iou=np.array(ious),
                        kf_score=np.array(kf), kf_ok=np.array(kf_ok), kf_mean=np.stack(means),
                        stable_frames=np.array(stable), checksum=checksum,
                        box=np.array(BOX), stable_threshold=STABLE)
    print(f"wrote {out}; stable frames {stable}; kf scored on {int(np.sum(kf_ok))} frames")


if __name__ == "__main__":
    main()
