# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 16 Acceleration
# > Fused kernels with hand-written backward passes, each equal to its textbook twin, switched on by one call.
#
# The textbook functions of modules 01-15 build every idea from earlier ops, and autograd
# derives their backward passes. That is the clearest way to write them and a slow way to
# run them: a LayerNorm written with `mean`, `-`, `*` and `sqrt` is a dozen graph nodes,
# each allocating its own temporary arrays, and its backward pass walks all of them again.
# A *fused kernel* computes the same function in a few NumPy passes and states its
# derivative directly, as one op in the derivative table.
#
# Each kernel here has the signature of the textbook function it replaces and is tested
# equal to it: values and every gradient, in float64 (to 1e-10 relative) and float32.
# `enable()` registers them all with module 01's `register_kernel`, and the package's
# `tinytorch/__init__.py` calls it once, visibly. `disable()` (or `TINYTORCH_KERNELS=textbook`
# in the environment) runs the textbook code again.

# %%
#| default_exp accel

# %%
#| export
import contextlib
import math

import numpy as np
from tinytorch.core.tensor import Tensor, record, register_kernel, KERNELS, _wrap
from tinytorch.core.autograd import derivative

# %% [markdown]
# ## Scalar ops and in-place updates

# %%
#| export
SCALAR_KERNELS = {}

# %% [markdown]
# ## Softmax, GELU, linear layers and cross-entropy

# %%
#| export
ELEMENTWISE_KERNELS = {}

# %% [markdown]
# ## Attention

# %%
#| export
ATTENTION_KERNELS = {}

# %% [markdown]
# ## LayerNorm, the GPT-2 MLP, RMSNorm and SwiGLU
#
# Four kernels replace the textbook functions of modules 11 and 12: `layer_norm`,
# `linear_gelu`, `rms_norm` and `swiglu`. Each works on the input viewed as rows `(N, D)`,
# computes in place where it can, and records one op whose derivative rule is written out.
# Row sums and means go through BLAS (a matrix-vector product with a vector of ones), which
# is faster than `ndarray.sum` on a single core.
#
# **LayerNorm backward.** $\hat x$ does not change when $x$ is shifted or scaled, so with
# $r = 1/\sqrt{\sigma^2+\varepsilon}$ and $\hat g = g\odot\gamma$
#
# $$\frac{\partial L}{\partial x} = r\left(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g\odot\hat x}\right),
# \qquad \frac{\partial L}{\partial \gamma} = \textstyle\sum_n g\odot\hat x, \qquad \frac{\partial L}{\partial \beta} = \sum_n g,$$
#
# where the bars are means over the normalised features and $\sum_n$ runs over all other
# positions. Both means are matrix-vector products, $\overline{\hat g} = (g\,\gamma)/D$ and
# $\overline{\hat g\odot\hat x} = ((g\odot\hat x)\,\gamma)/D$, and $g\odot\hat x$ is needed for
# $\partial L/\partial\gamma$ anyway, so the backward pass never forms $\hat g$ on its own.
# RMSNorm's gradient is the same without the mean term.
#
# **GELU backward.** Forward keeps $a = \tfrac12(1+t)$ with $t = \tanh(k(h + c h^3))$,
# $k = \sqrt{2/\pi}$, $c = 0.044715$; then $\mathrm{GELU}(h) = a h$, $1-t^2 = 4a(1-a)$ and
# the derivative is $a + a(1-a)\,h\,(2k + 6kc\,h^2)$. `h*h*h` rather than `h**3`: NumPy's
# float32 `power` is much slower than two multiplications.
#
# **SwiGLU backward.** With $s = \mathrm{SiLU}(a)$, $u = W_3x$ and $\hat g = W_2^\top g$:
# $\partial L/\partial a = \hat g\odot u\odot\sigma(a)(1 + a(1-\sigma(a)))$ and
# $\partial L/\partial u = \hat g\odot s$, then the usual Linear rules. The sigmoid is
# $\tfrac12(1+\tanh(a/2))$, which never overflows.

# %%
#| export
from tinytorch.models.transformer import check_normalized_shape


def _norm_dtype(dtype):
    "float32 for float16 and float32 inputs, float64 for float64: norms never compute below float32."
    return np.result_type(dtype, np.float32)


def _norm_rows(x, normalized_shape, op):
    "Check `normalized_shape` against x's trailing dims; return x.data as (N, D) in the compute dtype, and D."
    d = int(np.prod(check_normalized_shape(x, normalized_shape, op)))
    return x.data.reshape(-1, d).astype(_norm_dtype(x.dtype), copy=False), d


def _blas_row_mean(a, d):
    "Mean of each row of a 2-D array, through BLAS: a @ ones / d, as an (N, 1) column."
    return (a @ np.full(a.shape[1], 1.0 / d, dtype=a.dtype))[:, None]


def _blas_col_sum(a):
    "Sum over rows of a 2-D array through BLAS: ones @ a."
    return np.ones(a.shape[0], dtype=a.dtype) @ a


def fused_layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    "module 11's layer_norm as one op 'layer_norm', saving (xhat, rstd, gamma, weight shape, bias shape, x shape)."
    x2, d = _norm_rows(x, normalized_shape, "layer_norm")
    xhat = x2 - _blas_row_mean(x2, d)
    rstd = _blas_row_mean(xhat * xhat, d)
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.divide(1.0, rstd, out=rstd)
    xhat *= rstd
    out = xhat * weight.data.reshape(-1) if weight is not None else xhat.copy()
    if bias is not None: out += bias.data.reshape(-1)
    out = out.reshape(x.shape).astype(x.dtype, copy=False)
    inputs = (x,) + tuple(t for t in (weight, bias) if t is not None)
    return record("layer_norm", out, inputs, (xhat, rstd, None if weight is None else weight.data.reshape(-1),
                                              None if weight is None else weight.shape,
                                              None if bias is None else bias.shape, x.shape))


@derivative("layer_norm")
def _layer_norm_backward(g, xhat, rstd, w, w_shape, b_shape, x_shape):
    """Gradients for (x, weight, bias), the absent ones left out: g is the output's gradient (x's shape),
    xhat (N, D) and rstd (N, 1) in the compute dtype, w the flat gamma or None."""
    ### BEGIN SOLUTION
    d = xhat.shape[1]
    g2 = g.reshape(xhat.shape).astype(xhat.dtype, copy=False)
    gamma = np.ones(d, dtype=xhat.dtype) if w is None else w
    p = g2 * xhat                                          # g ⊙ x̂, which dL/dγ needs anyway
    grads = [None] if w is None else [None, _blas_col_sum(p).reshape(w_shape)]
    gamma_d = gamma / d
    mean_g = (g2 @ gamma_d)[:, None]                       # mean of ĝ = g ⊙ γ: a product with γ itself
    mean_gx = (p @ gamma_d)[:, None]                       # mean of ĝ ⊙ x̂
    gx = g2 * gamma
    gx -= mean_g
    gx -= np.multiply(xhat, mean_gx, out=p)                # p's memory is free again once dL/dγ is taken
    gx *= rstd
    grads[0] = gx.reshape(x_shape)
    if b_shape is not None: grads.append(_blas_col_sum(g2).reshape(b_shape))
    return tuple(grads)
    ### END SOLUTION


_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def fused_linear_gelu(x, weight, bias=None):
    "module 11's linear_gelu as one op 'linear_gelu': one GEMM, the tanh GELU in place."
    in_features = weight.shape[1]
    if x.shape[-1:] != (in_features,):
        raise ValueError(f"linear_gelu: input of shape {x.shape} does not match weight of shape {weight.shape}; "
                         f"expected last dimension {in_features}")
    if x.dtype.kind != "f":
        raise TypeError(f"linear_gelu: expected a floating-point input, got dtype {x.dtype}")
    x2 = x.data.reshape(-1, in_features)
    h = x2 @ weight.data.T
    if bias is not None: h += bias.data
    a = h * h
    a *= _GELU_K * _GELU_C
    a += _GELU_K
    a *= h                                   # k (h + c h³)
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5                                 # a = (1 + tanh) / 2, so gelu(h) = a h
    out = (a * h).reshape(x.shape[:-1] + (weight.shape[0],))
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear_gelu", out, inputs, (x2, weight.data, h, a, x.shape))


@derivative("linear_gelu")
def _linear_gelu_backward(g, x2, w, h, a, x_shape):
    r = h * h                                # d gelu / d h = a + a (1 - a) h (2k + 6kc h²)
    r *= 6.0 * _GELU_K * _GELU_C
    r += 2.0 * _GELU_K
    r *= h
    dh = np.subtract(1.0, a)
    dh *= a
    dh *= r
    dh += a
    dh *= g.reshape(h.shape)                 # now the gradient of the pre-activation
    gx = (dh @ w).reshape(x_shape)
    return gx, dh.T @ x2, _blas_col_sum(dh)


def fused_rms_norm(x, normalized_shape, weight=None, eps=1e-5):
    "module 12's rms_norm as one op 'rms_norm', saving (xhat, rstd, gamma, weight shape, x shape)."
    x2, d = _norm_rows(x, normalized_shape, "rms_norm")
    rstd = _blas_row_mean(x2 * x2, d)
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.divide(1.0, rstd, out=rstd)
    xhat = x2 * rstd
    out = xhat * weight.data.reshape(-1) if weight is not None else xhat.copy()
    out = out.reshape(x.shape).astype(x.dtype, copy=False)
    inputs = (x,) if weight is None else (x, weight)
    return record("rms_norm", out, inputs, (xhat, rstd, None if weight is None else weight.data.reshape(-1),
                                            None if weight is None else weight.shape, x.shape))


@derivative("rms_norm")
def _rms_norm_backward(g, xhat, rstd, w, w_shape, x_shape):
    d = xhat.shape[1]
    g2 = g.reshape(xhat.shape).astype(xhat.dtype, copy=False)
    gxhat = g2 * w if w is not None else g2.copy()
    proj = _blas_row_mean(gxhat * xhat, d)
    gxhat -= xhat * proj
    gxhat *= rstd
    if w is None: return (gxhat.reshape(x_shape),)
    return gxhat.reshape(x_shape), _blas_col_sum(g2 * xhat).reshape(w_shape)


def fused_swiglu(x, w1, w2, w3):
    "module 12's swiglu as one op 'swiglu': three GEMMs and the gate, sharing temporaries."
    d = w1.shape[1]
    if x.shape[-1:] != (d,):
        raise ValueError(f"swiglu: input of shape {x.shape} does not match w1 of shape {w1.shape}; "
                         f"expected last dimension {d}")
    x2 = x.data.reshape(-1, d)
    a = x2 @ w1.data.T
    u = x2 @ w3.data.T
    sig = a * 0.5
    np.tanh(sig, out=sig)
    sig += 1.0
    sig *= 0.5
    h = a * sig
    h *= u
    out = (h @ w2.data.T).reshape(x.shape[:-1] + (w2.shape[0],))
    return record("swiglu", out, (x, w1, w2, w3), (x2, w1.data, w2.data, w3.data, a, u, sig, x.shape))


@derivative("swiglu")
def _swiglu_backward(g, x2, w1, w2, w3, a, u, sig, x_shape):
    g2 = g.reshape(-1, w2.shape[0])
    s = a * sig                                   # silu(a)
    gw2 = g2.T @ (s * u)
    gh = g2 @ w2
    gu = gh * s
    ds = 1.0 - sig                                # d silu / d a = sig * (1 + a * (1 - sig))
    ds *= a
    ds += 1.0
    ds *= sig
    gh *= u
    gh *= ds                                      # gradient of a
    gx = gh @ w1
    gx += gu @ w3
    return gx.reshape(x_shape), gh.T @ x2, gw2, gu.T @ x2


NORM_KERNELS = {"layer_norm": fused_layer_norm, "linear_gelu": fused_linear_gelu,
                "rms_norm": fused_rms_norm, "swiglu": fused_swiglu}

# %% [markdown]
# Each kernel equals its textbook twin (`fn.textbook`, the body modules 11 and 12 define):
# values and every gradient, float64 to 1e-10 relative, float32 to float32 round-off. The
# package function dispatches to the kernel when it is registered and to the textbook code
# inside `textbook()`, and the recorded op shows which ran.

# %%
import pytest
import tinytorch.models.transformer as _gpt
import tinytorch.models.llama as _llama

def _leaves(arrays, dtype):
    return [None if a is None else Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in arrays]

def _value_and_grads(fn, arrays, dtype, call):
    ts = _leaves(arrays, dtype)
    out = call(fn, *ts)
    out.backward(np.random.default_rng(7).standard_normal(out.shape).astype(dtype))
    return [out.data] + [t.grad.data for t in ts if t is not None]

def _assert_twins(kernel, twin, arrays, call, op):
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 2e-5)):
        fast, slow = _value_and_grads(kernel, arrays, dtype, call), _value_and_grads(twin, arrays, dtype, call)
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape, (op, i)
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= rtol, f"{op} {np.dtype(dtype).name}: {'value' if i == 0 else f'gradient {i}'} differs by {err:.2e} relative"
    ts = _leaves(arrays, np.float64)
    was = enabled()
    try:
        register_kernel(op, kernel)
        assert call(getattr(_gpt, op, None) or getattr(_llama, op), *ts).grad_fn == op          # registration on
        register_kernel(op, None)
        assert call(getattr(_gpt, op, None) or getattr(_llama, op), *ts).grad_fn != op          # off: textbook
    finally:
        (enable if was else disable)()

def _r(*shape, seed, scale=1.0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset

@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("norm_shape", [(16,), (3, 16)])
def test_fused_layer_norm_equals_textbook(affine, norm_shape):
    arrays = [_r(2, 3, 16, seed=0, scale=3.0, offset=1.5)] + ([_r(*norm_shape, seed=1), _r(*norm_shape, seed=2)]
                                                              if affine else [None, None])
    call = lambda f, x, w, b: f(x, norm_shape, w, b, eps=1e-5)
    _assert_twins(fused_layer_norm, _gpt.layer_norm.textbook, arrays, call, "layer_norm")

@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_gelu_equals_textbook(bias):
    arrays = [_r(2, 7, 12, seed=3, scale=2.0), _r(20, 12, seed=4, scale=0.5), _r(20, seed=5) if bias else None]
    _assert_twins(fused_linear_gelu, _gpt.linear_gelu.textbook, arrays, lambda f, x, w, b: f(x, w, b), "linear_gelu")

@pytest.mark.parametrize("affine", [True, False])
def test_fused_rms_norm_equals_textbook(affine):
    arrays = [_r(2, 5, 24, seed=6, scale=2.0), _r(24, seed=7) if affine else None]
    _assert_twins(fused_rms_norm, _llama.rms_norm.textbook, arrays, lambda f, x, w: f(x, 24, w, eps=1e-5), "rms_norm")

def test_fused_swiglu_equals_textbook():
    arrays = [_r(2, 5, 16, seed=8, scale=2.0), _r(48, 16, seed=9, scale=0.4), _r(16, 48, seed=10, scale=0.4),
              _r(48, 16, seed=11, scale=0.4)]
    _assert_twins(fused_swiglu, _llama.swiglu.textbook, arrays, lambda f, *ts: f(*ts), "swiglu")

def test_fused_norms_float16_and_errors_equal_textbook():
    x = Tensor(_r(4, 64, seed=12, scale=300.0), dtype=np.float16)
    for kernel, twin in ((fused_layer_norm, _gpt.layer_norm.textbook), (fused_rms_norm, _llama.rms_norm.textbook)):
        a, b = kernel(x, 64), twin(x, 64)
        assert a.dtype == b.dtype == np.float16 and np.abs(a.data.astype(np.float32) - b.data).max() <= 2e-3
        for bad, exc in ((Tensor(np.ones((2, 4))), ValueError), (Tensor(np.ones((2, 64), dtype=np.int64)), TypeError)):
            with pytest.raises(exc) as fast: kernel(bad, 64)
            with pytest.raises(exc) as slow: twin(bad, 64)
            assert str(fast.value) == str(slow.value)
    w = Tensor(np.ones((6, 4)))
    with pytest.raises(ValueError) as fast: fused_swiglu(Tensor(np.ones((2, 5))), w, Tensor(np.ones((4, 6))), w)
    with pytest.raises(ValueError) as slow: _llama.swiglu.textbook(Tensor(np.ones((2, 5))), w, Tensor(np.ones((4, 6))), w)
    assert str(fast.value) == str(slow.value) and "swiglu: input of shape (2, 5) does not match w1" in str(fast.value)

# %% [markdown]
# ## Switching the kernels on
#
# `FUSED_KERNELS` maps each replaceable textbook function's name to its kernel. `enable()`
# registers all of them, `disable()` removes them, and `textbook()` is a context in which
# the textbook code runs (the tests use it to compare the two).

# %%
#| export
FUSED_KERNELS = {**SCALAR_KERNELS, **ELEMENTWISE_KERNELS, **ATTENTION_KERNELS, **NORM_KERNELS}


def enable():
    "Register every fused kernel of this chapter in place of its textbook twin."
    for name, kernel in FUSED_KERNELS.items():
        register_kernel(name, kernel)


def disable():
    "Remove this chapter's kernels: the textbook functions run again."
    for name in FUSED_KERNELS:
        register_kernel(name, None)


def enabled():
    "True if every kernel of this chapter is registered."
    return all(KERNELS.get(name) is kernel for name, kernel in FUSED_KERNELS.items())


@contextlib.contextmanager
def textbook():
    "A context in which the textbook functions run; the previous registrations come back afterwards."
    saved = {name: KERNELS[name] for name in FUSED_KERNELS if name in KERNELS}
    disable()
    try:
        yield
    finally:
        for name, kernel in saved.items():
            register_kernel(name, kernel)

# %%
def test_enable_disable_and_textbook_context():
    was = enabled()
    try:
        enable()
        assert enabled()
        with textbook():
            assert not any(name in KERNELS for name in FUSED_KERNELS)
        assert enabled()
        disable()
        assert not any(name in KERNELS for name in FUSED_KERNELS)
    finally:
        (enable if was else disable)()

# %% [markdown]
# ## Run this module's tests
#
# **How to test and complete.** The cell below runs every test of this notebook in the kernel
# and prints one line per test: PASS, FAIL with the reason (for a value out of tolerance:
# where, and by how much) or TODO for a function not written yet. From the shell,
# `tito module test 17` runs the same tests, and `tito module complete 17` tests your
# notebook, exports it into `tinytorch/` and runs the package tests.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
