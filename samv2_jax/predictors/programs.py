"""The compiled programs the predictors run: the functional core's jitted functions, each as an
`aot.Program`, so that once `aot.enable` is on (the `samv2` command turns it on) a new process
loads their executables instead of tracing and compiling them again.

The tracking step's programs are made on first use: importing the tracking core (and flax with
it) costs a one-shot `samv2 segment` about 0.3 s it has no use for."""

import functools

from samv2_jax.modeling import image_encoder, mask_postprocess, memory_encoder
from samv2_jax.predictors.aot import Program

encode_image = Program(image_encoder.encode_image)
encode_memory = Program(memory_encoder.encode_memory)
to_video_res = Program(mask_postprocess.to_video_res)

_TRACKING = ("decode_frame", "track_step_inplace", "track_image_step_inplace")


@functools.cache
def _tracking_program(name: str) -> Program:
    from samv2_jax.tracking import step

    return Program(getattr(step, name))


def __getattr__(name: str):
    if name in _TRACKING:
        return _tracking_program(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
