"""Scores for tracking: DAVIS J / F / J&F (semi-supervised protocol) and box success AUC /
precision (LaSOT, GOT-10k), and running a memory policy over a DAVIS / MOSE style folder."""

from samv2_jax.evaluation.boxes import box_iou_xywh, box_scores, mask_to_box_xywh
from samv2_jax.evaluation.davis import (
    boundary_accuracy,
    evaluate_video,
    region_similarity,
    statistics,
    summarize,
)

__all__ = ["boundary_accuracy", "box_iou_xywh", "box_scores", "evaluate_video",
           "mask_to_box_xywh", "region_similarity", "statistics", "summarize"]
