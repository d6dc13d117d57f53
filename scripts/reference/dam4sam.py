"""Reference outputs of DAM4SAM (jovanavidenovic/DAM4SAM) for tests/tracking/policies/
test_mem_dam4sam_reference.py.

Usage: python scripts/reference/dam4sam.py /path/to/DAM4SAM [out.npz]

The path is a local copy of the DAM4SAM repository. Its tracker imports the VOT toolkit at the
versions its requirements.txt pins (vot-toolkit 0.7.1, attributee 0.1.9: newer attributee
releases fail to import on Python 3.11, and vot-toolkit 0.9 no longer has `RegionType`). Give
the script an environment of its own over the system packages, for example:

    python3 -m venv /tmp/dam4sam-venv --system-site-packages
    /tmp/dam4sam-venv/bin/pip install --no-deps vot-toolkit==0.7.1 attributee==0.1.9 \
        phx-class-registry
    /tmp/dam4sam-venv/bin/python scripts/reference/dam4sam.py /path/to/DAM4SAM

(The toolkit also needs matplotlib, opencv-python(-headless) and numba; the SAMURAI script
needs loguru: `pip install matplotlib opencv-python-headless numba loguru` into the same
environment.) It runs DAM4SAM's own tracker (`dam4sam_tracker.DAM4SAMTracker`: `initialize`
with a mask, then `track` frame by frame, its DRM admission test and its SAM 2.1 fork with
the RAM/DRM memory) on the sam2.1 tiny model of its `sam21pp_hiera_t.yaml` at 256, every
tensor re-drawn as tests/official.py does, on the distractor video of
tests/tracking/policies/mem_videos.py. Changed for this machine, nothing else: tensors stay
on the CPU (the tracker hard-codes CUDA), and each frame is the tensor the official frame
loader makes from the same JPEG folder our predictor reads (the tracker resizes with
torchvision, which this machine lacks). The weights are then changed by
mem_videos.dam4sam_weights_ (object-score and IoU biases raised, absolute position encodings
zeroed, mask logits lowered) so that on this short clip the admission rule meets confident,
compact masks, frames without the target, and admits frames into the DRM.

Stored per frame: the mask logits at the model's mask size (float32; the test upsamples them
as the reference does for the video), the video-resolution mask bit-packed, the predicted
IoU, the mask area the tracker measured, whether the frame entered the DRM, and which
memories (frame, temporal-encoding index) and object pointers (frame) the frame attended to,
read off the memory-attention input; plus hand-made box pairs scored by VOT's own
`calculate_overlaps` (the rule the admission uses) and a checksum of every tensor.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SIZE, T, H, W = 256, 16, 150, 211
MAX_MEM, MAX_PTR = 8, 20


def _cpu_torch(torch):
    """The torch module as the tracker sees it, with every device the CPU."""
    proxy = types.ModuleType("torch_on_cpu")
    proxy.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    proxy.device = lambda *a, **k: torch.device("cpu")
    return proxy


def _box_cases(rng):
    """Pairs of masks whose boxes the admission rule compares (the second contains the first,
    as the chosen mask's box lies inside its union with an alternative), flat ones included."""
    cases = []
    for _ in range(60):
        h, w = rng.integers(4, 16, size=2)
        a = np.zeros((h, w), np.uint8)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h), rng.integers(x0, w)
        a[y0:y1 + 1, x0:x1 + 1] = 1
        b = a.copy()
        if rng.random() < 0.8:
            by, bx = rng.integers(0, h), rng.integers(0, w)
            b[by, bx] = 1
        cases.append((a, b))
    return cases


def main():
    ref = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests/data/dam4sam_reference.npz"
    sys.path.insert(0, str(ref))
    sys.path.insert(1, str(ROOT / "tests"))
    sys.path.insert(2, str(ROOT / "tests/tracking/policies"))
    import mem_videos
    import torch
    from PIL import Image

    import official
    import video_scripts as vs

    official.install_torchvision_standin()
    # the tracker imports torchvision's functional transforms (for the resize replaced below)
    sys.modules.setdefault("torchvision.transforms.functional",
                           types.ModuleType("torchvision.transforms.functional"))
    sys.modules["torchvision.transforms"].functional = \
        sys.modules["torchvision.transforms.functional"]
    import sam2
    assert str(ref) in sam2.__file__, sam2.__file__
    import dam4sam_tracker
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.utils.misc import load_video_frames
    from vot.region import RegionType
    from vot.region.raster import calculate_overlaps
    from vot.region.shapes import Mask

    dam4sam_tracker.torch = _cpu_torch(torch)
    torch.Tensor.cuda = lambda self, *a, **k: self  # its memory code moves tensors to CUDA

    pred = build_sam2_video_predictor("sam21pp_hiera_t.yaml", None, device="cpu", mode="eval",
                                      hydra_overrides_extra=[f"++model.image_size={SIZE}"])
    official.randomize_(pred, 0)
    pred.eval()
    pred.fill_hole_area = 0  # its hole filling needs a CUDA extension
    mem_videos.dam4sam_weights_(pred)
    checksum = np.array([float(v.double().abs().sum()) for v in pred.state_dict().values()])

    attended = []
    forward = official._memory_as_float32(pred.memory_attention.forward)

    def looking(*args, **kwargs):
        attended.append({k: kwargs[k] for k in ("memory", "memory_pos", "num_obj_ptr_tokens")})
        return forward(*args, **kwargs)

    pred.memory_attention.forward = looking

    tracker = dam4sam_tracker.DAM4SAMTracker.__new__(dam4sam_tracker.DAM4SAMTracker)
    tracker.predictor = pred
    tracker.input_image_size = SIZE
    tracker.img_mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    tracker.img_std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    tracker.tracking_times = []

    frames, prompt = mem_videos.distractor_video(T, H, W)
    tmp = Path(tempfile.mkdtemp())
    folder = vs.write_jpeg_folder(frames, tmp / "frames")
    loaded, _, _ = load_video_frames(folder, SIZE, offload_video_to_cpu=True)
    pil = [Image.open(p) for p in sorted(Path(folder).glob("*.jpg"))]
    by_image = {id(im): loaded[t] for t, im in enumerate(pil)}
    tracker._prepare_image = lambda im: by_image[id(im)]

    hw = (SIZE // 16) ** 2
    split = pred.hidden_dim // pred.mem_dim
    tpos_table = pred.maskmem_tpos_enc.detach()[:, 0, 0]  # [num_maskmem, mem_dim]

    def decode_attended(a, output_dict):
        """(frame, temporal-encoding index) of each spatial memory, frames of the pointers."""
        mem, pos, nptr = a["memory"][:, 0].float(), a["memory_pos"][:, 0].float(), \
            a["num_obj_ptr_tokens"]
        stored = {**output_dict["non_cond_frame_outputs"], **output_dict["cond_frame_outputs"]}
        spatial = (mem.shape[0] - nptr) // hw
        mems, ptrs = [], []
        for j in range(spatial):
            block = mem[j * hw:(j + 1) * hw]
            hit = [t for t, o in stored.items() if o["maskmem_features"] is not None and
                   torch.equal(o["maskmem_features"][0].float().flatten(1).T, block)]
            assert len(hit) == 1, hit
            enc = pos[j * hw:(j + 1) * hw] - stored[hit[0]]["maskmem_pos_enc"][-1][0].flatten(1).T
            k = int(torch.argmin((enc[0][None] - tpos_table).abs().sum(1)))
            mems.append((hit[0], k))
        tokens = mem[mem.shape[0] - nptr:].reshape(-1, split, pred.mem_dim)
        for p in tokens:
            hit = [t for t, o in stored.items() if torch.equal(o["obj_ptr"][0].float(),
                                                               p.reshape(-1))]
            assert len(hit) >= 1, "pointer not found"
            ptrs.append(hit[0] if len(hit) == 1 else -2)  # -2: several frames share it
        return mems, ptrs

    low, video_bits, iou, area, admitted = [], [], [], [], []
    mem_rec = np.full((T, MAX_MEM, 2), -1, np.int32)
    ptr_rec = np.full((T, MAX_PTR), -1, np.int32)
    with torch.no_grad():
        first = tracker.initialize(pil[0], prompt)
        video_bits.append(np.packbits(first["pred_mask"].astype(bool)))
        state = tracker.inference_state
        low.append(None)  # frame 0's outputs are consolidated on the first `track`
        iou.append(np.nan)
        area.append(-1)
        admitted.append(False)
        for t in range(1, T):
            attended.clear()
            drm_before = list(state["adds_in_drm_per_obj"][0])
            res = tracker.track(pil[t])
            video_bits.append(np.packbits(res["pred_mask"].astype(bool)))
            o = state["output_dict"]["non_cond_frame_outputs"][t]
            low.append(o["pred_masks"][0, 0].numpy())
            iou.append(float(np.max(o["all_pred_masks"][1])))
            area.append(int(o["n_pixels_pos"]))
            admitted.append(len(state["adds_in_drm_per_obj"][0]) > len(drm_before))
            assert len(attended) == 1
            mems, ptrs = decode_attended(attended[0], state["output_dict"])
            mem_rec[t, :len(mems)] = np.array(mems)
            ptr_rec[t, :len(ptrs)] = ptrs
        o = state["output_dict"]["cond_frame_outputs"][0]
        low[0] = o["pred_masks"][0, 0].numpy()
        area[0] = int(o["n_pixels_pos"])

    cases = _box_cases(np.random.default_rng(0))
    overlaps = np.array([calculate_overlaps([Mask(a).convert(RegionType.RECTANGLE)],
                                            [Mask(b).convert(RegionType.RECTANGLE)])[0]
                         for a, b in cases])
    pad = 16
    case_masks = np.zeros((len(cases), 2, pad, pad), bool)
    for i, (a, b) in enumerate(cases):
        case_masks[i, 0, :a.shape[0], :a.shape[1]] = a
        case_masks[i, 1, :b.shape[0], :b.shape[1]] = b

    np.savez_compressed(
        out, low_res=np.stack(low).astype(np.float32), video_bits=np.stack(video_bits),
        iou=np.array(iou), area=np.array(area), admitted=np.array(admitted),
        memories=mem_rec, pointers=ptr_rec, prompt_bits=np.packbits(prompt),
        box_masks=np.packbits(case_masks, axis=-1), box_overlap=overlaps, checksum=checksum,
        shifts=np.array([mem_videos.DAM4SAM_OBJ_SHIFT, mem_videos.DAM4SAM_IOU_SHIFT,
                        mem_videos.DAM4SAM_LOGIT_SHIFT]), video_hw=np.array([H, W]))
    print(f"wrote {out} ({out.stat().st_size} bytes); admitted at "
          f"{np.flatnonzero(admitted).tolist()}; iou {np.round(iou, 3).tolist()}; "
          f"area {area}")
    for t in range(1, T):
        print(t, [tuple(x) for x in mem_rec[t] if x[0] >= 0],
              [int(x) for x in ptr_rec[t] if x >= 0])


if __name__ == "__main__":
    main()
