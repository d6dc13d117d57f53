"""Building blocks whose gradients we compute ourselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samv2_jax.modeling.layers import conv2d, depthwise_conv


def _grouped_conv(x, w, padding):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


@pytest.mark.parametrize("shape,k,padding", [((2, 16, 12, 8), 7, 3), ((1, 9, 9, 5), 3, 1),
                                             ((3, 6, 10, 4), 5, 0)])
def test_depthwise_conv_value_and_gradients_equal_autodiff(shape, k, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, 1, shape[-1])), jnp.float32)
    y_ref = _grouped_conv(x, w, padding)
    g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    np.testing.assert_array_equal(np.asarray(depthwise_conv(x, w, padding)), np.asarray(y_ref))
    ours = jax.grad(lambda x, w: jnp.sum(depthwise_conv(x, w, padding) * g), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(_grouped_conv(x, w, padding) * g), (0, 1))(x, w)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                   atol=2e-6 * float(jnp.max(jnp.abs(b))))


def test_depthwise_kernel_gradient_is_not_a_dense_convolution():
    # The point of the custom gradient: XLA's CPU backend would compute the kernel gradient
    # as a dense [7, 7, C, C] convolution (C times the work).
    c = 32
    p = {"weight": jnp.ones((7, 7, 1, c)), "bias": jnp.zeros((c,))}
    x = jnp.ones((1, 16, 16, c))
    hlo = jax.jit(jax.grad(lambda p: jnp.sum(conv2d(p, x, padding=3, groups=c)))).lower(
        p).compile().as_text()
    assert f"f32[7,7,{c},{c}]" not in hlo
    assert "convolution(" not in hlo or "feature_group_count" in hlo
