"""Where the automatic mask generator prompts: point grids and the crops they are laid over.

Host-side numpy over static sizes. Official counterparts: `build_point_grid`,
`build_all_layer_point_grids` and `generate_crop_boxes` in `sam2.utils.amg`; the same numbers
(float64 grids, integer crop boxes) so that every prompt lands on the same pixel.
"""

from __future__ import annotations

import math

import numpy as np


def build_point_grid(n_per_side: int) -> np.ndarray:
    """[n * n, 2] (x, y) in [0, 1]: cell centres of an n x n grid, row by row."""
    half_cell = 1.0 / (2 * n_per_side)
    ticks = np.linspace(half_cell, 1.0 - half_cell, n_per_side)
    xs, ys = np.meshgrid(ticks, ticks)  # xs varies along a row
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int,
                                scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has int(n_per_side / scale_per_layer**i) per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i)))
            for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] (end-exclusive) and their layer: the whole image, then for
    layer i (1..n_layers) a (2**i x 2**i) tiling whose neighbours overlap by
    int(overlap_ratio * short side * 2 / 2**i) pixels. Within a layer the boxes go column
    by column (all y0 for the first x0, then the next x0)."""
    im_h, im_w = (int(v) for v in im_size)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    short_side = min(im_h, im_w)
    for layer in range(1, n_layers + 1):
        per_side = 2 ** layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + im_w) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + im_h) / per_side))
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layers.append(layer)
    return boxes, layers
