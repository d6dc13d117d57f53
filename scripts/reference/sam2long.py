"""Reference outputs of SAM2Long (Mark12Ding/SAM2Long) for tests/tracking/policies/
test_mem_reference.py.

Usage: python scripts/reference/sam2long.py /path/to/SAM2Long [out.npz]

The path is a local copy of the SAM2Long repository (its `sam2/` folder is a modified SAM 2
package). Its memory attention reshapes the memory into frames of 4096 tokens, i.e. it only
runs at the 1024 input; this script loads that package with that one constant replaced by
the token count of a 256 input (16 x 16), touching nothing else, builds the sam2.1 tiny video
predictor at 256 with every tensor re-drawn as tests/official.py does (object-score shift
SHIFT, so that some frames are uncertain), runs its propagation with its published settings
(3 pathways, iou_thre 0.1, uncertainty 2) from a mask prompt on the test video, and stores
per frame the surviving pathways' cumulative scores, IoUs and object scores, the best
pathway's mask logits at the model's mask size (float32; the test upsamples them to the video
as the reference does), and which pathway's mask the final answer (the final best pathway's
lineage) took on each frame.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SIZE, T, H, W = 256, 8, 150, 211
SHIFT = 1.0


def build_reference_predictor(ref: Path, size: int, tmp: Path):
    """SAM2Long's own video predictor (sam2.1 tiny at `size`) from a local copy `ref` of its
    repository, loaded from a copy in `tmp` with its memory-token constant set for `size`;
    every tensor re-drawn as tests/official.py does, object-score bias + SHIFT."""
    shutil.copytree(ref / "sam2", tmp / "sam2")
    attn = tmp / "sam2/modeling/memory_attention.py"
    text = attn.read_text()
    if text.count("4096") != 2:
        raise SystemExit(f"{attn}: not the SAM2Long memory attention this script knows")
    # frames of (size/16)^2 memory tokens instead of its fixed 64x64 (a no-op at 1024)
    attn.write_text(text.replace("4096", str((size // 16) ** 2)))
    sys.path.insert(0, str(tmp))
    sys.path.insert(1, str(ROOT / "tests"))
    import torch

    import official

    official.install_torchvision_standin()
    import sam2
    from sam2.build_sam import build_sam2_video_predictor

    if not sam2.__file__.startswith(str(tmp)):
        raise SystemExit(f"imported {sam2.__file__}, not the reference's package")
    pred = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                      mode="eval",
                                      hydra_overrides_extra=[f"++model.image_size={size}"])
    official.randomize_(pred, 0)
    pred.eval()
    pred.fill_hole_area = 0
    with torch.no_grad():
        pred.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += SHIFT
    pred.memory_attention.forward = official._memory_as_float32(pred.memory_attention.forward)
    return pred


def main():
    ref = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests/data/sam2long_reference.npz"
    tmp = Path(tempfile.mkdtemp())
    pred = build_reference_predictor(ref, SIZE, tmp)
    import torch

    import video_scripts as vs

    checksum = np.array([float(v.double().abs().sum()) for v in pred.state_dict().values()])

    frames = vs.make_frames(T, H, W)
    prompt = vs.disk_mask(H, W, 0.45 * H, 0.5 * W, 0.2 * H)
    folder = vs.write_jpeg_folder(frames, tmp / "frames")
    state = pred.init_state(folder)
    state["num_pathway"], state["iou_thre"], state["uncertainty"] = 3, 0.1, 2
    pred.add_new_mask(state, 0, 1, prompt)
    with torch.no_grad():
        _, final = pred.propagate_in_video(state, start_frame_idx=0)
    final = np.stack([m.numpy() for m in final])  # [T, 1, 1, H, W]
    nc = state["output_dict"]["non_cond_frame_outputs"]
    p = 3
    acc = np.full((T, p), np.nan)
    ious = np.full((T, p), np.nan)
    scores = np.full((T, p), np.nan)
    masks = np.full((T, p, H, W), np.nan, np.float32)
    best_low = np.full((T, SIZE // 4, SIZE // 4), np.nan, np.float32)
    column = np.zeros(T, np.int64)
    for f in range(1, T):
        o = nc[f]
        k = o["pred_masks"].shape[-1]
        acc[f, :len(o["acc_score"])] = o["acc_score"]
        ious[f, :k] = np.asarray(o["ious"].float()).reshape(-1)[:k]
        scores[f, :k] = np.asarray(o["object_score_logits"].float()).reshape(-1)[:k]
        for j in range(k):
            masks[f, j] = pred._get_orig_video_res_output(
                state, o["pred_masks"][..., j])[1].numpy()[0, 0]
        best_low[f] = o["pred_masks"][..., 0].float().numpy()[0, 0]
        up = torch.nn.functional.interpolate(torch.from_numpy(best_low[f])[None, None], (H, W),
                                             mode="bilinear", align_corners=False)
        assert np.array_equal(up.numpy()[0, 0], masks[f, 0]), f
        column[f] = int(np.argmin([np.abs(masks[f, j] - final[f, 0, 0]).max()
                                   for j in range(k)]))
    np.savez_compressed(out, acc=acc, ious=ious, scores=scores, best_low_res=best_low,
                        video_hw=np.array([H, W]), column=column, checksum=checksum,
                        prompt_bits=np.packbits(prompt), shift=SHIFT)
    print(f"wrote {out}; final columns {column.tolist()}; scores {np.round(scores, 2)}")


if __name__ == "__main__":
    main()
