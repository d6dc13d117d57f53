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


def _dense_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


# The memory encoder's mask downsampler (3x3, stride 2, pad 1), Hiera's patch embedding
# (7x7, stride 4, pad 3), odd sizes and no padding.
@pytest.mark.parametrize("shape,k,stride,padding,co", [
    ((3, 32, 32, 4), 3, 2, 1, 16), ((2, 32, 32, 3), 7, 4, 3, 8), ((1, 13, 11, 5), 3, 2, 1, 6),
    ((2, 12, 12, 2), 4, 4, 0, 3)])
def test_strided_conv_value_and_gradients_equal_autodiff(shape, k, stride, padding, co):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, shape[-1], co)), jnp.float32)
    p = {"weight": w, "bias": jnp.zeros((co,))}
    y_ref = _dense_conv(x, w, stride, padding)
    g = jnp.asarray(rng.standard_normal(y_ref.shape), jnp.float32)
    np.testing.assert_array_equal(np.asarray(conv2d(p, x, stride, padding)), np.asarray(y_ref))
    ours = jax.grad(lambda x, w: jnp.sum(conv2d({"weight": w, "bias": p["bias"]}, x, stride,
                                                padding) * g), (0, 1))(x, w)
    ref = jax.grad(lambda x, w: jnp.sum(_dense_conv(x, w, stride, padding) * g), (0, 1))(x, w)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                   atol=2e-6 * float(jnp.max(jnp.abs(b))))


def test_strided_kernel_gradient_is_not_a_convolution():
    # XLA's CPU backend would compute it as a convolution with an output-sized window.
    p = {"weight": jnp.ones((3, 3, 16, 64)), "bias": jnp.zeros((64,))}
    x = jnp.ones((2, 64, 64, 16))
    hlo = jax.jit(jax.grad(lambda p: jnp.sum(conv2d(p, x, stride=2, padding=1)))).lower(
        p).compile().as_text()
    assert "convolution(" not in hlo, [ln for ln in hlo.splitlines() if "convolution(" in ln]
