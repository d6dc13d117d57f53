"""The official training code as the oracle: `training.model.sam2.SAM2Train` with every tensor
re-drawn, driven with the prompts our sampler drew, plus its loss and backward pass.

The official draws its prompt choices with a numpy generator (`model.rng`) and its clicks
and boxes with torch. To compare one clip exactly, `ScriptedRng` answers the generator's
calls with our plan's choices, and `replayed_prompts` replaces `get_next_point` /
`sample_box_points` by functions that hand out our clicks and boxes in the order the
official asks for them (checking each time that it asks about the frame we expect).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import official  # noqa: E402

LOSS_WEIGHTS = {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1}


def train_overrides(train_cfg) -> list[str]:
    """Hydra overrides that turn an inference config into `SAM2Train` with `train_cfg`."""
    c = train_cfg
    return [
        "++model._target_=training.model.sam2.SAM2Train",
        f"++model.prob_to_use_pt_input_for_train={c.prob_to_use_pt_input_for_train}",
        f"++model.prob_to_use_box_input_for_train={c.prob_to_use_box_input_for_train}",
        f"++model.num_frames_to_correct_for_train={c.num_frames_to_correct_for_train}",
        f"++model.rand_frames_to_correct_for_train={c.rand_frames_to_correct_for_train}",
        f"++model.num_init_cond_frames_for_train={c.num_init_cond_frames_for_train}",
        f"++model.rand_init_cond_frames_for_train={c.rand_init_cond_frames_for_train}",
        f"++model.num_correction_pt_per_frame={c.num_correction_pt_per_frame}",
        f"++model.prob_to_sample_from_gt_for_train={c.prob_to_sample_from_gt_for_train}",
        f"++model.add_all_frames_to_correct_as_cond={c.add_all_frames_to_correct_as_cond}",
        f"++model.freeze_image_encoder={c.freeze_image_encoder}",
    ]


def build_sam2_train(name: str, image_size: int, train_cfg, seed: int = 0,
                     obj_score_shift: float = 0.0):
    """Official SAM2Train (training mode, dropout off) with all tensors re-drawn."""
    official.install_torchvision_standin()
    from sam2.build_sam import build_sam2

    extra = [f"++model.image_size={image_size}", *train_overrides(train_cfg)]
    model = build_sam2(official._CONFIG_FILES[name], None, device="cpu", mode="eval",
                       hydra_overrides_extra=extra)
    official.randomize_(model, seed)
    if obj_score_shift:
        with torch.no_grad():
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += obj_score_shift
    # The parity runs have dropout (and stochastic depth, 0 in these configs) off.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0
    model.train()
    return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def datapoint(images, masks):
    """BatchedVideoDatapoint of one video: images [T, S, S, 3] normalised (NHWC numpy),
    masks [T, O, S, S] bool."""
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    t, o = masks.shape[:2]
    img = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))[:, None]
    frame_idx = torch.arange(t)[:, None].expand(t, o)
    obj_to_frame = torch.stack([frame_idx, torch.zeros_like(frame_idx)], -1).int()
    meta = BatchedVideoMetaData(
        unique_objects_identifier=torch.zeros(t, o, 3, dtype=torch.long),
        frame_orig_size=torch.zeros(t, o, 2, dtype=torch.long), batch_size=[t])
    return BatchedVideoDatapoint(img_batch=img.float(), obj_to_frame_idx=obj_to_frame,
                                 masks=torch.from_numpy(masks), metadata=meta, dict_key="all",
                                 batch_size=[t])


class ScriptedRng:
    """Stands in for `SAM2Train.rng`: answers its calls with the choices of our plan, in the
    order `prepare_prompt_inputs` and the correction loop make them."""

    def __init__(self, plan, train_cfg):
        p = {k: np.asarray(v) for k, v in vars(plan).items()}
        self.randoms, self.ints, self.choices = [], [], []
        use_pt = bool(p["use_pt_input"])
        init = [int(f) for f in p["order"] if p["is_init_cond"][f]]
        n_init = len(init)
        self.randoms.append(0.0 if use_pt else 0.999)
        c = train_cfg
        if c.rand_init_cond_frames_for_train and c.num_init_cond_frames_for_train > 1:
            self.ints.append(n_init)
        n_corr = int(p["is_corrected"].sum()) if use_pt else 0
        if (use_pt and train_cfg.rand_frames_to_correct_for_train
                and train_cfg.num_frames_to_correct_for_train > n_init):
            self.ints.append(n_corr)
        if n_init > 1:
            self.choices.append(np.asarray(init[1:]))
        if use_pt:
            for f in init:
                self.randoms.append(0.0 if p["init_prompt"][f] == 2 else 0.999)
            extra = [int(f) for f in np.flatnonzero(p["is_corrected"] & ~p["is_init_cond"])]
            if extra:
                self.choices.append(np.asarray(extra))
        if use_pt and train_cfg.prob_to_sample_from_gt_for_train > 0:
            for f in p["order"]:
                if p["is_corrected"][f]:
                    self.randoms += [0.0 if g else 0.999 for g in p["sample_from_gt"][f]]

    def random(self):
        return self.randoms.pop(0)

    def integers(self, low, high, endpoint=False):
        v = self.ints.pop(0)
        assert low <= v <= (high if endpoint else high - 1), (low, high, v)
        return v

    def choice(self, a, size, replace=True):
        v = self.choices.pop(0)
        assert len(v) == size and set(v.tolist()) <= set(list(a)), (list(a), size, v)
        return v

    def exhausted(self) -> bool:
        return not (self.randoms or self.ints or self.choices)


@contextlib.contextmanager
def replayed_prompts(out, plan, masks):
    """Patch the official samplers to hand out our clicks and boxes (from `forward_clip`'s
    output for video 0) in the official's call order."""
    import training.model.sam2 as sam2_train

    p = {k: np.asarray(v) for k, v in vars(plan).items()}
    xy = np.asarray(out["point_coords"])[0]
    lab = np.asarray(out["point_labels"])[0]
    queue = []
    init = [int(f) for f in p["order"] if p["is_init_cond"][f]]
    if p["use_pt_input"]:
        for f in init:
            n = 2 if p["init_prompt"][f] == 2 else 1
            queue.append((f, xy[f][:, :n], lab[f][:, :n]))
        for f in p["order"]:
            if p["is_corrected"][f]:
                for j in range(p["sample_from_gt"].shape[1]):
                    queue.append((int(f), xy[f][:, 2 + j: 3 + j], lab[f][:, 2 + j: 3 + j]))

    def hand_out(gt_masks, *args, **kwargs):
        f, pts, labels = queue.pop(0)
        assert np.array_equal(gt_masks[:, 0].numpy(), masks[f]), f"official asked about {f}?"
        return torch.from_numpy(np.ascontiguousarray(pts)).float(), torch.from_numpy(
            np.ascontiguousarray(labels)).int()

    saved = sam2_train.get_next_point, sam2_train.sample_box_points
    sam2_train.get_next_point = lambda gt_masks, pred_masks, method: hand_out(gt_masks)
    sam2_train.sample_box_points = lambda masks, *a, **k: hand_out(masks)
    try:
        yield queue
    finally:
        sam2_train.get_next_point, sam2_train.sample_box_points = saved


def official_loss_module(loss_cfg=None):
    from training.loss_fns import MultiStepMultiMasksAndIous

    c = loss_cfg
    kw = {} if c is None else dict(
        focal_alpha=c.focal_alpha, focal_gamma=c.focal_gamma, supervise_all_iou=c.supervise_all_iou,
        iou_use_l1_loss=c.iou_use_l1_loss, pred_obj_scores=c.pred_obj_scores,
        focal_gamma_obj_score=c.focal_gamma_obj_score,
        focal_alpha_obj_score=c.focal_alpha_obj_score)
    weights = dict(LOSS_WEIGHTS) if c is None else {
        "loss_mask": c.weight_mask, "loss_dice": c.weight_dice, "loss_iou": c.weight_iou,
        "loss_class": c.weight_class}
    if c is None:
        kw = dict(supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True,
                  focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0)
    return MultiStepMultiMasksAndIous(weights, **kw)


def official_step(model, images, masks, out, plan, train_cfg):
    """Forward + loss + backward of the official on one clip with our prompts.
    -> (per-frame outputs, loss dict (floats), {param name: grad numpy})."""
    model.zero_grad(set_to_none=True)
    model.rng = ScriptedRng(plan, train_cfg)
    batch = datapoint(images, masks)
    with replayed_prompts(out, plan, masks) as queue:
        frames = model(batch)
    assert not queue and model.rng.exhausted(), "the official asked for other prompts"
    losses = official_loss_module(train_cfg.loss)(frames, batch.masks)
    losses["core_loss"].backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()
             if p.grad is not None}
    vals = {k: float(v.detach()) for k, v in losses.items()}
    return frames, vals, grads
