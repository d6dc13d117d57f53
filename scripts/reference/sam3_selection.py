"""Reference memory selections of the SAM 3 tracker (PyPI `sam3`), for
tests/tracking/policies/test_mem_reference.py.

Usage: python scripts/reference/sam3_selection.py /path/to/sam3/model/sam3_tracker_base.py [out]

The path is the file from a local copy of the `sam3` package (`pip download --no-deps sam3`
and unzip). Importing the package pulls in its detector's dependencies, so this script takes
the two methods of `Sam3TrackerBase` that decide the selection, `cal_mem_score` and
`frame_filter`, out of that file unchanged and runs them on hand-made tracks: per frame an
object score and predicted IoU (some absent, some low), forward and backward, memory stride
1 and 3, short and long videos. It stores the inputs and the frames selected (`valid_indices`,
from which the reference takes its spatial memories and pointers) in
tests/data/sam3_selection_reference.npz.
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def reference_methods(path: Path):
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body
               if isinstance(n, ast.ClassDef) and n.name == "Sam3TrackerBase")
    wanted = [f for f in cls.body if isinstance(f, ast.FunctionDef)
              and f.name in ("cal_mem_score", "frame_filter")]
    ns = {"torch": torch}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), ns)
    return ns["cal_mem_score"], ns["frame_filter"]


def main():
    src = Path(sys.argv[1])
    out = (Path(sys.argv[2]) if len(sys.argv) > 2
           else ROOT / "tests/data/sam3_selection_reference.npz")
    cal_mem_score, frame_filter = reference_methods(src)
    model = types.SimpleNamespace(mf_threshold=0.01, max_obj_ptrs_in_encoder=16)
    rng = np.random.default_rng(3)
    arrays = {}
    cases = [  # (num_frames, prompt frame, current frame, reverse, stride)
        (40, 0, 30, False, 1), (40, 0, 9, False, 1), (12, 0, 11, False, 1),
        (40, 39, 5, True, 1), (40, 0, 35, False, 3), (40, 20, 3, True, 3), (10, 0, 1, False, 1)]
    for c, (n, prompt, f, reverse, r) in enumerate(cases):
        obj = rng.normal(1.0, 3.0, n).astype(np.float32)
        iou = rng.uniform(0.0, 1.0, n).astype(np.float32)
        tracked = [t for t in range(n) if t != prompt and ((t > prompt) != reverse)
                   and ((t < f) != reverse) and t != f]
        non_cond = {}
        for t in tracked:
            o = torch.tensor([[obj[t]]])
            non_cond[t] = {"eff_iou_score": cal_mem_score(model, o, torch.tensor([iou[t]]))}
        output_dict = {"cond_frame_outputs": {prompt: {}}, "non_cond_frame_outputs": non_cond}
        sel = frame_filter(model, output_dict, reverse, f, n, r)
        arrays[f"c{c}_case"] = np.array([n, prompt, f, int(reverse), r])
        arrays[f"c{c}_obj"], arrays[f"c{c}_iou"] = obj, iou
        arrays[f"c{c}_tracked"] = np.array(tracked, np.int32)
        arrays[f"c{c}_selected"] = np.array(sel, np.int32)
        arrays[f"c{c}_score"] = np.array([float(non_cond[t]["eff_iou_score"]) if t in non_cond
                                          else np.nan for t in range(n)])
    np.savez_compressed(out, **arrays)
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
