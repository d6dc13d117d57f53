"""One training step on a fixed batch, on a mesh of several devices or across processes.

    python pipeline_step_script.py meshes OUT.npz
        (run with XLA_FLAGS=--xla_force_host_platform_device_count=4): the step on meshes of
        1, 2 and 4 devices, and on 2 devices with params sharded by a rule table
    python pipeline_step_script.py process OUT.npz PROCESS_ID NUM_PROCESSES PORT
        one of NUM_PROCESSES processes joined through jax.distributed (CPU collectives), each
        holding its own rows of the global batch

Started by tests/train/test_pipeline_devices.py; writes the loss, the gradient norm and the
gradient of every parameter in each case.
"""

from __future__ import annotations

import sys

import numpy as np

B, T, NOBJ, S = 4, 1, 2, 64  # clips, frames, objects, image size


def fixed_batch() -> dict:
    from samv2_jax.train.data import synthetic

    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(B):
        frames, labels = synthetic.moving_objects_video(rng, T, S, S, NOBJ)
        images.append(frames)
        masks.append(np.stack([labels == k + 1 for k in range(NOBJ)], 1))
    valid = np.ones((B, NOBJ), bool)
    valid[1, 1] = valid[3, 1] = False  # padded objects: the loss counts valid ones only
    masks = np.stack(masks)
    masks[~valid[:, None, :].repeat(T, 1)] = False
    return {"images": np.stack(images), "masks": masks, "obj_valid": valid}


def train_args() -> list[str]:
    """The `samv2 train` options of the step, shared with test_pipeline_resume.py: sam2.1 tiny
    at 64 from random weights, one-frame clips prompted by a click and one correction click,
    the prompt encoder and mask decoder trained (the cheapest program of the real objective
    to compile)."""
    return ["--model", "sam2.1_hiera_tiny", "--init", "random", "--image-size", str(S),
            "--num-frames", "1", "--max-num-objects", str(NOBJ), "--batch-size", str(B),
            "--recipe", "decoder_only", "--steps", "8", "--seed", "0",
            "--set", "train.prob_to_use_pt_input_for_train=1.0",
            "--set", "train.num_correction_pt_per_frame=1",
            "--set", "train.num_init_cond_frames_for_train=1",
            "--set", "train.rand_init_cond_frames_for_train=false",
            "--set", "train.num_frames_to_correct_for_train=1",
            "--set", "train.rand_frames_to_correct_for_train=false"]


def one_step(mesh, rules, host_rows) -> dict:
    import dataclasses

    import jax

    from samv2_jax.app.cli import build_parser
    from samv2_jax.app.commands.train import build_config
    from samv2_jax.train.loop import _initial_params, setup_training
    from samv2_jax.weights.layout import flatten

    args = build_parser().parse_args(["train", "--data", "davis:unused", *train_args()])
    config = dataclasses.replace(build_config(args), param_sharding=tuple(rules))
    model_cfg, host_params = _initial_params(config)
    setup = setup_training(config, model_cfg, host_params, mesh)
    step = setup["compile_step"](config.train_config(), with_grads=True)
    from samv2_jax.train import sharding as shd

    batch = shd.global_batch(host_rows, mesh)
    _, _, _, metrics = step(setup["params"], setup["opt_state"], setup["key"], batch)
    grads = flatten(jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), metrics["grads"]))
    out = {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"])}
    for k in sorted(flatten(host_params)):
        out["grad/" + k] = grads[k]
    return out


def main(argv) -> None:
    mode, out = argv[1], argv[2]
    if mode == "meshes":
        import jax

        from samv2_jax.train import sharding as shd

        assert len(jax.devices()) == 4, jax.devices()
        batch = fixed_batch()
        results = {}
        # the decoder's largest matrices split over the model axis, its MLPs over data too
        rules = ((r"sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.layers\.0\.weight",
                  ("data", "model")),
                 (r"sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.layers\.1\.weight",
                  ("model", None)),
                 (r"image_encoder\.trunk\.blocks\.\d+\.mlp\.layers\.0\.weight", (None, "model")))
        for name, devices, model_axis, r in (("1", 1, 1, ()), ("2", 2, 1, ()), ("4", 4, 1, ()),
                                              ("2x2-sharded", 4, 2, rules)):
            mesh = shd.make_mesh(jax.devices()[:devices], model_axis=model_axis)
            for k, v in one_step(mesh, r, batch).items():
                results[f"{name}:{k}"] = v
        np.savez(out, **results)
        return
    if mode == "process":
        pid, n, port = int(argv[3]), int(argv[4]), int(argv[5])
        from samv2_jax.train import sharding as shd

        assert shd.initialize_distributed(f"127.0.0.1:{port}", n, pid)
        import jax

        assert jax.process_count() == n and len(jax.devices()) == n
        batch = fixed_batch()
        rows = B // n
        mine = {k: v[pid * rows: (pid + 1) * rows] for k, v in batch.items()}
        res = one_step(shd.make_mesh(), (), mine)
        if pid == 0:
            np.savez(out, **res)
        jax.distributed.shutdown()
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
