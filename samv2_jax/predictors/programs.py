"""The compiled programs the predictors run: the functional core's jitted functions, each as an
`aot.Program`, so that once `aot.enable` is on (the `samv2` command turns it on) a new process
loads their executables instead of tracing and compiling them again."""

from samv2_jax.modeling import image_encoder, mask_postprocess, memory_encoder
from samv2_jax.predictors.aot import Program
from samv2_jax.tracking import step

encode_image = Program(image_encoder.encode_image)
encode_memory = Program(memory_encoder.encode_memory)
to_video_res = Program(mask_postprocess.to_video_res)
decode_frame = Program(step.decode_frame)
track_step_inplace = Program(step.track_step_inplace)
track_image_step_inplace = Program(step.track_image_step_inplace)
