"""`samv2 eval`: a memory policy scored on a DAVIS / MOSE style dataset (J, F, J&F; box
success AUC / precision with --boxes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from samv2_jax.app.options import add_model_options, load_model, positive_int, select_device


def _table(result: dict, boxes: bool) -> str:
    s = result["summary"]
    lines = [f"{'sequence':<32} {'J':>7} {'F':>7} {'J&F':>7}"]
    for r in s["objects"]:
        lines.append(f"{r['sequence']:<32} {r['J']:7.4f} {r['F']:7.4f} {r['J&F']:7.4f}")
    lines.append(f"{'mean':<32} {s['J']:7.4f} {s['F']:7.4f} {s['J&F']:7.4f}")
    if boxes:
        b = result["box_summary"]
        lines.append(f"boxes: success AUC {b['success_auc']:.4f}, precision@20px "
                     f"{b['precision']:.4f}, normalized precision {b['normalized_precision']:.4f}")
    return "\n".join(lines)


def _jsonable(result: dict) -> dict:
    videos = {v: {str(k): {"J": list(r["J"]), "F": list(r["F"]),
                           "J_frames": r["J_frames"].tolist(),
                           "F_frames": r["F_frames"].tolist()} for k, r in objs.items()}
              for v, objs in result["videos"].items()}
    out = {"summary": result["summary"], "videos": videos}
    if "boxes" in result:
        out["boxes"] = {v: {str(k): s for k, s in objs.items()}
                        for v, objs in result["boxes"].items()}
        out["box_summary"] = result["box_summary"]
    return out


def _run_eval(args) -> int:
    from samv2_jax.evaluation.dataset import dataset_videos, evaluate_dataset
    from samv2_jax.predictors.video import SAM2VideoPredictor
    from samv2_jax.tracking.policies import policy_by_name

    dataset_videos(args.dataset)  # a wrong folder fails before the model loads
    policy = policy_by_name(args.memory)
    select_device(args.device)
    model = load_model(args)
    predictor = SAM2VideoPredictor(model, policy=policy)
    videos = [v for v in args.videos.split(",") if v] if args.videos else None

    def progress(name, scores):
        if not args.quiet:
            jf = [(r["J"][0] + r["F"][0]) / 2 for r in scores.values()]
            print(f"{name}: J&F {sum(jf) / len(jf):.4f} ({len(jf)} objects)", file=sys.stderr)

    result = evaluate_dataset(predictor, args.dataset, videos=videos, boxes=args.boxes,
                              max_frames=args.max_frames, progress=progress)
    table = _table(result, args.boxes)
    print(f"memory policy {args.memory}, model {model.config.name} at "
          f"{model.config.image_size}")
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(
            dict(_jsonable(result), memory=args.memory, model=model.config.name), indent=1))
        (out / "results.txt").write_text(table + "\n")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="score a memory policy on a DAVIS/MOSE-style dataset",
                       description="Track every video of a DAVIS/MOSE-style folder "
                                   "(JPEGImages/ + Annotations/) from its first-frame masks "
                                   "(the semi-supervised protocol) and report per-object and "
                                   "mean J, F and J&F as the DAVIS 2017 evaluation does.")
    p.add_argument("dataset", help="folder with JPEGImages/<video>/ and Annotations/<video>/")
    p.add_argument("--memory", default="official",
                   help="memory policy: official, samurai, dam4sam, sam2long, sam3 "
                        "(default official)")
    p.add_argument("--videos", default=None, help="comma-separated video names (default: all)")
    p.add_argument("--boxes", action="store_true",
                   help="prompt each object with the box of its first mask and also report "
                        "box success AUC / precision (LaSOT, GOT-10k protocol)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="score only the first N frames of each video")
    p.add_argument("--out", default=None, help="folder for results.json and results.txt")
    add_model_options(p)
    p.set_defaults(func=_run_eval)
