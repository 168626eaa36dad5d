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
# # 17 Acceleration
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
from tinytorch.core.tensor import Tensor, record, register_kernel, KERNELS, as_tensor
from tinytorch.core.autograd import derivative

# %% [markdown]
# Every kernel is tested with `_assert_twins(kernel, twin, arrays, call, name)`: the kernel and
# its textbook twin (`fn.textbook`) are called as `call(fn, *leaves)` on the same leaf tensors,
# in float64 and float32, and must agree in value and in the gradient of every leaf. Then the
# package function is called with the kernel registered under `name` (its op must show in
# `grad_fn`) and unregistered (the textbook code runs).

# %%
import importlib
import pytest

def _leaves(arrays, dtype):
    return [None if a is None else Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in arrays]

def _value_and_grads(fn, arrays, dtype, call):
    ts = _leaves(arrays, dtype)
    out = call(fn, *ts)
    out.backward(np.random.default_rng(7).standard_normal(out.shape).astype(dtype))
    return [out.data] + [t.grad.data for t in ts if t is not None]

def _assert_twins(kernel, twin, arrays, call, name, recorded=None):
    recorded = recorded or name
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 2e-5)):
        fast, slow = _value_and_grads(kernel, arrays, dtype, call), _value_and_grads(twin, arrays, dtype, call)
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape, (name, i)
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= rtol, f"{name} {np.dtype(dtype).name}: {'value' if i == 0 else f'gradient {i}'} differs by {err:.2e} relative"
    ts = _leaves(arrays, np.float64)
    package = getattr(importlib.import_module(twin.__module__), twin.__name__)
    was = enabled()
    try:
        register_kernel(name, kernel)
        assert call(package, *ts).grad_fn == recorded          # registration on: the kernel's op
        register_kernel(name, None)
        assert call(package, *ts).grad_fn != recorded          # off: the textbook code
    finally:
        (enable if was else disable)()

def _r(*shape, seed, scale=1.0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset

# %% [markdown]
# ## Scalar ops and in-place updates

# %%
#| export
SCALAR_KERNELS = {}

# %% [markdown]
# ## Softmax, GELU, linear layers and cross-entropy
#
# Six kernels replace textbook functions of modules 03-05: `gelu` (both forms), `silu`,
# `softmax`, `log_softmax`, `linear` and `cross_entropy`. Each does the input checks of its
# twin (the same helpers, so the same error messages), computes the value in place where it
# can, and records one op that saves only what its derivative needs.
#
# **GELU.** Exact: save Φ(x) and use GELU′(x) = Φ(x) + x φ(x), φ(x) = e^(−x²/2)/√(2π). Tanh
# form: save t = tanh u and use ½(1 + t) + ½x(1 − t²)√(2/π)(1 + 3·0.044715x²), so the
# backward needs no transcendental function; 1 + t is formed before the small second term
# is added, because for x ≪ 0 it is tiny and adding it last would lose it to rounding.
#
# **SiLU.** With s = σ(x) saved, the derivative is s(1 + x(1 − s)).
#
# **Softmax and log-softmax.** With p = softmax(x), y = log-softmax(x) and output gradient g:
#
# $$\frac{\partial L}{\partial x_i} = p_i \Big(g_i - \sum_j g_j p_j\Big), \qquad
#   \frac{\partial L}{\partial x_i} = g_i - e^{y_i}\sum_j g_j .$$
#
# Both rules need only the forward output. Sums over the last axis of a contiguous array go
# through BLAS as a product with a ones vector, much faster than `sum(axis=-1)` on short rows.
#
# **Linear.** The leading dimensions are flattened into rows X of shape `(N, in)`, so the
# layer is one GEMM (a 3-D `matmul` runs one small GEMM per batch row), and with G the
# gradient rows, ∂L/∂X = GW, ∂L/∂W = GᵀX, ∂L/∂b = Σₙ Gₙ.
#
# **Cross-entropy.** The row loss is lse − x_t with lse = m + log Σ e^(x−m), and with
# smoothing (1 − ε)(lse − x_t) + (ε/C)(C·lse − Σ_c x_c). The op keeps e^(x−m) and its row
# sums. With per-row gradient weight w (1/n for a mean, the incoming gradient for `'none'`,
# 0 for ignored rows), the gradient is w·p − w·q: scale e^(x−m) by w/Σ, subtract wε/C if
# smoothing, and subtract w(1 − ε) at the N target positions with one fancy-indexed update,
# never building a one-hot matrix.

# %%
#| export
from tinytorch.core.activations import float_data, softmax_axis, check_approximate, erf_array
from tinytorch.core.layers import check_linear_input
from tinytorch.core.losses import check_cross_entropy

_GELU_K = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _sum_keepdims(a, axis):
    "Sum over `axis`, keeping it. Over the last axis of a contiguous array: a BLAS matrix-vector product."
    if axis == a.ndim - 1 and a.size and a.flags.c_contiguous:
        n = a.shape[-1]
        return (a.reshape(-1, n) @ np.ones(n, dtype=a.dtype)).reshape(a.shape[:-1] + (1,))
    return a.sum(axis=axis, keepdims=True)


def fused_gelu(x, approximate="none"):
    "module 03's gelu as one op: 'gelu' saving (x, Phi(x)), or 'gelu_tanh' saving (x, tanh u)."
    data = float_data(x, "gelu")
    check_approximate(approximate)
    if approximate == "none":
        cdf = erf_array(data * _INV_SQRT_2)
        cdf += 1.0
        cdf *= 0.5
        return record("gelu", data * cdf, (x,), (data, cdf))
    t = data * data
    t *= _GELU_K * _GELU_C
    t += _GELU_K
    t *= data                                  # u = sqrt(2/pi) (x + 0.044715 x^3)
    np.tanh(t, out=t)
    out = t + 1.0
    out *= data
    out *= 0.5
    return record("gelu_tanh", out, (x,), (data, t))


@derivative("gelu")
def _gelu_backward(g, x, cdf):
    d = x * x
    d *= -0.5
    np.exp(d, out=d)
    d *= _INV_SQRT_2PI                         # phi(x)
    d *= x
    d += cdf
    d *= g
    return (d,)


@derivative("gelu_tanh")
def _gelu_tanh_backward(g, x, t):
    d = x * x
    d *= 3.0 * _GELU_C * _GELU_K
    d += _GELU_K                               # du/dx
    d *= x
    u = t * t
    np.subtract(1.0, u, out=u)                 # 1 - tanh^2 u
    d *= u
    np.add(t, 1.0, out=u)                      # 1 + tanh u first: for x << 0 it is tiny and exact
    d += u
    d *= 0.5
    d *= g
    return (d,)


def fused_silu(x):
    "module 03's silu as one op 'silu', saving (x, sigmoid(x))."
    data = float_data(x, "silu")
    s = data * 0.5
    np.tanh(s, out=s)
    s += 1.0
    s *= 0.5                                   # sigmoid(x) = (1 + tanh(x/2)) / 2
    return record("silu", data * s, (x,), (data, s))


@derivative("silu")
def _silu_backward(g, x, s):
    d = np.subtract(1.0, s)
    d *= x
    d += 1.0
    d *= s
    d *= g
    return (d,)


def fused_softmax(x, axis=-1, *, dim=None):
    "module 03's softmax as one op 'softmax', saving its output."
    data = float_data(x, "softmax")
    axis = softmax_axis(x, axis, dim, "softmax")
    with np.errstate(invalid="ignore"):        # a row of only -inf gives NaN, like PyTorch
        out = data - data.max(axis=axis, keepdims=True)
        np.exp(out, out=out)
        out /= _sum_keepdims(out, axis)
    return record("softmax", out, (x,), (out, axis))


@derivative("softmax")
def _softmax_backward(g, out, axis):
    gx = g * out
    dot = _sum_keepdims(gx, axis)
    np.subtract(g, dot, out=gx)
    gx *= out
    return (gx,)


def fused_log_softmax(x, axis=-1, *, dim=None):
    "module 03's log_softmax as one op 'log_softmax', saving its output."
    data = float_data(x, "log_softmax")
    axis = softmax_axis(x, axis, dim, "log_softmax")
    with np.errstate(invalid="ignore"):
        out = data - data.max(axis=axis, keepdims=True)
        lse = _sum_keepdims(np.exp(out), axis)
        np.log(lse, out=lse)
        out -= lse
    return record("log_softmax", out, (x,), (out, axis))


@derivative("log_softmax")
def _log_softmax_backward(g, out, axis):
    gx = np.exp(out)
    gx *= _sum_keepdims(g, axis)
    np.subtract(g, gx, out=gx)
    return (gx,)


def fused_linear(x, weight, bias=None):
    "module 04's linear as one op 'linear': the leading dims flattened into one GEMM."
    check_linear_input(x, weight)
    x2 = x.data.reshape(-1, weight.shape[1])
    out = x2 @ weight.data.T
    if bias is not None: out += bias.data
    out = out.reshape(x.shape[:-1] + (weight.shape[0],))
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return record("linear", out, inputs, (x2, weight.data, x.shape))


@derivative("linear")
def _linear_backward(g, x2, w, x_shape):
    g2 = g.reshape(-1, w.shape[0])
    gx = (g2 @ w).reshape(x_shape)
    gw = g2.T @ x2
    return gx, gw, g2.sum(axis=0)


def _row_sums(a):
    "Sums over the last axis of a C-contiguous 2-D array, as a BLAS matrix-vector product."
    return a @ np.ones(a.shape[1], dtype=a.dtype)


def fused_cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    "module 05's cross_entropy as one op 'cross_entropy', saving exp(x - m) and its row sums."
    t, valid, n_valid = check_cross_entropy(logits, targets, ignore_index, reduction, label_smoothing)
    eps, C = float(label_smoothing), logits.shape[-1]
    x = logits.data.reshape(-1, C)
    rows = np.arange(x.shape[0])
    with np.errstate(invalid="ignore"):                 # a row of only -inf logits gives NaN, like PyTorch
        z = x - x.max(axis=1, keepdims=True)            # z = x - m <= 0
        loss = -z[rows, t]                              # -(x_t - m)
        if eps: z_sum = _row_sums(z)
        e = np.exp(z, out=z)
        total = _row_sums(e)
        lse = np.log(total)                             # log sum exp(x - m)
        loss += lse                                     # lse - x_t: the negative log-likelihood
        if eps:
            loss *= 1.0 - eps
            lse *= C
            lse -= z_sum                                # -sum_c log p_c
            lse *= eps / C
            loss += lse
    if valid is not None: loss[~valid] = 0.0
    if reduction == "none":
        out = loss.reshape(logits.shape[:-1])
    elif reduction == "sum":
        out = np.asarray(loss.sum())
    else:
        out = np.asarray(loss.sum() / n_valid if n_valid else np.nan, dtype=x.dtype)
    saved = (e, total, t, valid, n_valid, reduction, eps, logits.shape)
    return record("cross_entropy", out, (logits,), saved)


@derivative("cross_entropy")
def _cross_entropy_backward(g, e, total, t, valid, n_valid, reduction, eps, shape):
    N, C = e.shape
    if reduction == "none":
        w = g.reshape(-1).astype(e.dtype)               # per-row weight: the incoming gradient
    elif reduction == "sum":
        w = np.full(N, g, dtype=e.dtype)
    else:
        w = np.full(N, g / n_valid if n_valid else 0.0, dtype=e.dtype)
    if valid is not None: w *= valid
    gx = e * (w / total)[:, None]                       # w * softmax
    if eps: gx -= (w * (eps / C))[:, None]
    gx[np.arange(N), t] -= w * (1.0 - eps)              # minus w * onehot, without building it
    return (gx.reshape(shape),)


ELEMENTWISE_KERNELS = {"gelu": fused_gelu, "silu": fused_silu, "softmax": fused_softmax,
                       "log_softmax": fused_log_softmax, "linear": fused_linear, "cross_entropy": fused_cross_entropy}

# %% [markdown]
# Each kernel equals its twin in values and every gradient (`_assert_twins`, above), and
# raises the same errors.

# %%
import tinytorch.core.activations as _act
import tinytorch.core.layers as _layers
import tinytorch.core.losses as _losses

@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fused_gelu_equals_textbook(approximate):
    _assert_twins(fused_gelu, _act.gelu.textbook, [_r(3, 5, 7, seed=20, scale=3.0)],
                  lambda f, x: f(x, approximate=approximate), "gelu", "gelu_tanh" if approximate == "tanh" else "gelu")

def test_fused_silu_equals_textbook():
    _assert_twins(fused_silu, _act.silu.textbook, [_r(3, 5, 7, seed=21, scale=4.0)], lambda f, x: f(x), "silu")

@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_fused_softmax_equals_textbook(name, axis):
    kernel = {"softmax": fused_softmax, "log_softmax": fused_log_softmax}[name]
    _assert_twins(kernel, getattr(_act, name).textbook, [_r(3, 4, 9, seed=22, scale=5.0)],
                  lambda f, x: f(x, dim=axis), name)

@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_equals_textbook(bias):
    arrays = [_r(2, 7, 12, seed=23, scale=2.0), _r(20, 12, seed=24, scale=0.5), _r(20, seed=25) if bias else None]
    _assert_twins(fused_linear, _layers.linear.textbook, arrays, lambda f, x, w, b: f(x, w, b), "linear")

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignored", [0, 3])
def test_fused_cross_entropy_equals_textbook(reduction, label_smoothing, ignored):
    t = np.random.default_rng(26).integers(0, 11, size=(3, 5))
    t.reshape(-1)[:ignored] = -100
    _assert_twins(fused_cross_entropy, _losses.cross_entropy.textbook, [_r(3, 5, 11, seed=27, scale=3.0)],
                  lambda f, x: f(x, t, reduction=reduction, label_smoothing=label_smoothing), "cross_entropy")

def test_fused_elementwise_kernels_raise_the_textbook_errors():
    x, w = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    cases = [(fused_gelu, _act.gelu.textbook, (x, "exact")), (fused_gelu, _act.gelu.textbook, (Tensor([1, 2]),)),
             (fused_silu, _act.silu.textbook, (np.ones(2),)), (fused_softmax, _act.softmax.textbook, (x, 2)),
             (fused_log_softmax, _act.log_softmax.textbook, (x, -3)), (fused_linear, _layers.linear.textbook, (x, w)),
             (fused_linear, _layers.linear.textbook, (Tensor(np.ones((2, 5), dtype=np.int64)), w)),
             (fused_cross_entropy, _losses.cross_entropy.textbook, (x, np.array([0, 3]))),
             (fused_cross_entropy, _losses.cross_entropy.textbook, (x, np.zeros(2), -100, "avg"))]
    for kernel, twin, args in cases:
        with pytest.raises(Exception) as fast: kernel(*args)
        with pytest.raises(Exception) as slow: twin(*args)
        assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value), (kernel.__name__, args)
    with pytest.warns(RuntimeWarning, match="every target equals ignore_index"):
        assert np.isnan(fused_cross_entropy(x, np.full(2, -100)).item())


# %% [markdown]
# ## Attention
#
# Module 09's `scaled_dot_product_attention` is six graph ops (matmul, scale, mask, softmax,
# dropout, matmul), and each allocates a $T_q \times T_k$ array per head that its backward pass
# reads again. `blocked_sdpa` computes the same function as one op whose forward makes two or
# three passes over the scores and whose backward is written out:
#
# 1. **Fold the scale into the queries.** `(q · s) Kᵀ` costs `T_q·d` multiplications,
#    `(q Kᵀ) · s` costs `T_q·T_k`.
# 2. **Mask in place** with `np.copyto(scores, -inf, where=blocked)`, which broadcasts a
#    `(T_q, T_k)` boolean matrix over all heads without building a full-size mask.
# 3. **Skip the row maximum when it cannot matter.** The maximum is subtracted only so that
#    `exp` cannot overflow. By Cauchy–Schwarz $|q_i \cdot k_j| \le \lVert q_i\rVert\,\lVert k_j\rVert$,
#    a bound that costs `O(T·d)`; when it is below 40 (float32; 300 for float64) we take `exp`
#    of the raw scores. Otherwise, and whenever a float mask is added, we subtract the row
#    maximum first.
# 4. **Normalise the output, not the weights.** With $E = \exp(S)$ and row sums
#    $z = E\,\mathbf 1$ (a matrix–vector product through BLAS), $O = \operatorname{diag}(1/z)\,E V$:
#    dividing the `(T, d)` output is cheaper than dividing the `(T, T)` weights. A row whose
#    keys are all masked has $z = 0$; its $1/z$ is set to 0, so it outputs 0 and passes no gradient.
# 5. **Skip what the causal mask hides.** For long causal sequences the queries go in blocks
#    of 64 rows; block `[r0, r1)` sees only keys `< r1 + offset`, so its scores, `exp` and
#    `E V` product use only that prefix. The fully masked upper-right part of $S$ is never computed.
#
# **Backward.** With $G = \partial L/\partial O$ and $P = E/z$, the softmax rule gives
# $\partial L/\partial S = P \odot (G V^\top - \delta)$ where $\delta_i = \sum_j P_{ij}(GV^\top)_{ij}
# = G_i \cdot O_i$, a row-wise dot product of two `(T, d)` arrays instead of a pass over `(T, T)`.
# Then $\partial L/\partial Q = s\,(\partial L/\partial S)\,K$, $\partial L/\partial K =
# (\partial L/\partial S)^\top (sQ)$ and $\partial L/\partial V = P^\top G$. A float mask that
# requires a gradient receives $\partial L/\partial S$.
#
# `blocked_qkv_attention` replaces module 09's `fused_qkv_attention`: from the packed
# `(B, T, 3C)` projection it takes strided views of the heads, rotates q and k (RoPE), runs
# the kernel writing straight into the merged `(B, T, C)` output, and its backward writes
# $dQ$, $dK$, $dV$ (rotated back) into the three slices of one `(B, T, 3C)` gradient.

# %%
#| export
from tinytorch.core.tensor import get_rng, grad_mode
from tinytorch.core.attention import KVCache, check_qkv, split_mask
from tinytorch.core.embeddings import rotate_pairs

_FUTURE_MASKS = {}
_BLOCK_ROWS = 64          # query rows per block when causal blocks are skipped
_MIN_BLOCKED_LEN = 128    # shorter query sequences are processed in one block
_EXP_SAFE = {np.dtype(np.float32): 40.0, np.dtype(np.float64): 300.0}


def _future_mask(tq, tk, offset):
    "Cached read-only boolean (tq, tk) array, True where key j lies in the future of query i (j > i + offset)."
    key = (tq, tk, offset)
    m = _FUTURE_MASKS.get(key)
    if m is None:
        if len(_FUTURE_MASKS) >= 64 or sum(a.nbytes for a in _FUTURE_MASKS.values()) > 32 << 20:
            _FUTURE_MASKS.clear()                 # bounded
        m = _FUTURE_MASKS[key] = np.triu(np.ones((tq, tk), dtype=bool), k=offset + 1)
        m.flags.writeable = False
    return m


def _blocks(tq, tk, causal_offset):
    "(row start, row end, key end) per query block; several blocks only for long causal attention."
    if causal_offset is None or causal_offset < 0 or tq < _MIN_BLOCKED_LEN:
        return [(0, tq, tk)]
    return [(r0, min(r0 + _BLOCK_ROWS, tq), min(tk, min(r0 + _BLOCK_ROWS, tq) + causal_offset))
            for r0 in range(0, tq, _BLOCK_ROWS)]


def _rows(m, r0, r1, kend):
    "The part of a broadcastable (..., T_q | 1, T_k | 1) mask covering query rows r0:r1 and keys :kend."
    return m[..., slice(r0, r1) if m.shape[-2] != 1 else slice(None), slice(0, kend) if m.shape[-1] != 1 else slice(None)]


def _scores_are_small(qs, k):
    "True if Cauchy-Schwarz proves |q_i . k_j| below the dtype's safe exp range for every score."
    limit = _EXP_SAFE.get(qs.dtype, 40.0)
    q2 = np.einsum("...i,...i->...", qs, qs).max(axis=-1)
    k2 = np.einsum("...i,...i->...", k, k).max(axis=-1)
    return bool((q2 * k2).max() < limit * limit)


def _exp_rows_(s, shift):
    "In place s <- exp(s) (minus each row's max first if `shift`); returns (s, 1/row sums) with 1/0 -> 0."
    if shift:
        m = s.max(axis=-1, keepdims=True)
        m[np.isneginf(m)] = 0.0                                   # fully masked rows: keep them at exp(-inf) = 0
        s -= m
    np.exp(s, out=s)
    z = np.matmul(s, np.ones(s.shape[-1], dtype=s.dtype))[..., None]      # row sums through BLAS
    rz = np.zeros_like(z)
    np.divide(1.0, z, out=rz, where=z > 0)
    return s, rz


def _attention_forward(qs, k, v, out, add=None, blocked=None, causal_offset=None, dropout_p=0.0):
    "O = softmax(qs kᵀ + mask) v written into `out`; returns [(r0, r1, kend, E, 1/z, dropout mask)] per block."
    tq, tk = qs.shape[-2], k.shape[-2]
    shift = add is not None or not _scores_are_small(qs, k)
    kT = np.swapaxes(k, -1, -2)
    saved = []
    for r0, r1, kend in _blocks(tq, tk, causal_offset):
        s = np.matmul(qs[..., r0:r1, :], kT[..., :kend])
        if add is not None: s += _rows(add, r0, r1, kend)
        if blocked is not None: np.copyto(s, -np.inf, where=_rows(blocked, r0, r1, kend))
        if causal_offset is not None:
            c0 = max(0, min(kend, r0 + causal_offset + 1))        # keys before c0 are visible to every row here
            if c0 < kend: np.copyto(s[..., c0:], -np.inf, where=_future_mask(tq, tk, causal_offset)[r0:r1, c0:kend])
        e, rz = _exp_rows_(s, shift)
        drop = None
        if dropout_p > 0.0:
            drop = (get_rng().random(e.shape, dtype=np.float32) >= dropout_p).astype(e.dtype)
            if dropout_p < 1.0: drop *= 1.0 / (1.0 - dropout_p)
        o = out[..., r0:r1, :]
        np.matmul(e if drop is None else e * drop, v[..., :kend, :], out=o)
        o *= rz
        saved.append((r0, r1, kend, e, rz, drop))
    return saved


def _attention_backward(g, qs, k, v, out, saved, scale, dq, dk, dv, dmask=None):
    "Write dL/dq, dL/dk, dL/dv (and dL/dscores into dmask) for O = attention(qs/scale, k, v), given g = dL/dO."
    delta = np.einsum("...i,...i->...", g, out)[..., None]            # rowsum(dP ⊙ P) = rowsum(G ⊙ O)
    vT = np.swapaxes(v, -1, -2)
    single = len(saved) == 1
    if not single:
        dk[...] = 0.0
        dv[...] = 0.0
    for r0, r1, kend, e, rz, drop in saved:
        gb = g[..., r0:r1, :] * rz                                     # G' = G / z
        ed = e if drop is None else e * drop
        if single: np.matmul(np.swapaxes(ed, -1, -2), gb, out=dv)
        else: dv[..., :kend, :] += np.matmul(np.swapaxes(ed, -1, -2), gb)
        ds = np.matmul(gb, vT[..., :kend])
        if drop is not None: ds *= drop
        ds -= delta[..., r0:r1, :] * rz
        ds *= e
        if dmask is not None: dmask[..., r0:r1, :kend] = ds
        dq_rows = dq[..., r0:r1, :]
        np.matmul(ds, k[..., :kend, :], out=dq_rows)
        dq_rows *= scale
        if single: np.matmul(np.swapaxes(ds, -1, -2), qs, out=dk)
        else: dk[..., :kend, :] += np.matmul(np.swapaxes(ds, -1, -2), qs[..., r0:r1, :])


def _mask_arrays(mask, scores_shape, dtype, who):
    "module 09's split_mask as (additive array or None, blocked array or None, mask tensor needing grad or None)."
    bias, blocked = split_mask(mask, scores_shape, dtype, who)
    if isinstance(bias, Tensor): return bias.data, blocked, bias
    return bias, blocked, None


def blocked_sdpa(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    "module 09's scaled_dot_product_attention as one op 'scaled_dot_product_attention'."
    who = "scaled_dot_product_attention"
    check_qkv(q, k, v, who)
    if not 0.0 <= dropout_p <= 1.0: raise ValueError(f"{who}: dropout_p must be in [0, 1], got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    add, blocked, mask_t = _mask_arrays(mask, q.shape[:-1] + (k.shape[-2],), q.dtype, who)
    qs = q.data * scale
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    saved = _attention_forward(qs, k.data, v.data, out, add, blocked, 0 if is_causal else None, dropout_p)
    inputs = (q, k, v) if mask_t is None else (q, k, v, mask_t)
    return record(who, out, inputs, (qs, k.data, v.data, out, saved, scale, mask_t is not None))


@derivative("scaled_dot_product_attention")
def _blocked_sdpa_backward(g, qs, k, v, out, saved, scale, mask_grad):
    g = np.ascontiguousarray(g)
    dq, dk, dv = np.empty(qs.shape, qs.dtype), np.empty(k.shape, k.dtype), np.empty(v.shape, v.dtype)
    dmask = np.zeros(out.shape[:-1] + (k.shape[-2],), dtype=qs.dtype) if mask_grad else None
    _attention_backward(g, qs, k, v, out, saved, scale, dq, dk, dv, dmask)
    return (dq, dk, dv) if dmask is None else (dq, dk, dv, dmask)


def _heads(a, num_heads):
    "Views (B, H, T, d_h) of q, k, v inside a packed (B, T, 3C) array."
    b, t, c3 = a.shape
    a = a.reshape(b, t, 3, num_heads, c3 // (3 * num_heads))
    return tuple(a[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def blocked_qkv_attention(qkv, num_heads, causal=True, mask=None, rope_cos=None, rope_sin=None, dropout_p=0.0,
                          kv_cache=None, scale=None):
    "module 09's fused_qkv_attention as one op 'fused_qkv_attention': heads are views, the output is merged in place."
    who = "fused_qkv_attention"
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"{who}: expected packed q|k|v of shape (B, T, 3C) with C divisible by num_heads={num_heads}, "
                         f"got {qkv.shape}")
    if qkv.dtype.kind != "f": raise TypeError(f"{who}: expected a floating-point tensor, got dtype {qkv.dtype}")
    b, t, c3 = qkv.shape
    c, hd = c3 // 3, c3 // (3 * num_heads)
    scale = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    q, k, v = _heads(qkv.data, num_heads)
    rope = rope_cos is not None
    if rope:
        rope_cos, rope_sin = rope_cos.astype(q.dtype, copy=False), rope_sin.astype(q.dtype, copy=False)
        qs = rotate_pairs(q, rope_cos, rope_sin)
        qs *= scale
        k = rotate_pairs(k, rope_cos, rope_sin)
    else:
        qs = q * scale
    offset = 0
    if kv_cache is not None:
        if grad_mode.enabled and qkv.requires_grad:
            raise RuntimeError(f"{who}: attention with a KV cache is for inference; call it under no_grad()")
        offset = kv_cache.length
        k, v = kv_cache.append(k, v)
    add, blocked, mask_t = _mask_arrays(mask, (b, num_heads, t, k.shape[-2]), qkv.dtype, who)
    out = np.empty((b, t, c), dtype=qkv.dtype)
    o4 = out.reshape(b, t, num_heads, hd).transpose(0, 2, 1, 3)        # heads merged for free
    saved = _attention_forward(qs, k, v, o4, add, blocked, offset if causal else None, dropout_p)
    inputs = (qkv,) if mask_t is None else (qkv, mask_t)
    return record(who, out, inputs, (qs, k, v, o4, saved, scale, num_heads, rope_cos, rope_sin, mask_t is not None))


@derivative("fused_qkv_attention")
def _blocked_qkv_attention_backward(g, qs, k, v, o4, saved, scale, num_heads, cos, sin, mask_grad):
    b, h, t, hd = qs.shape
    g4 = np.ascontiguousarray(g).reshape(b, t, h, hd).transpose(0, 2, 1, 3)
    dqkv = np.empty((b, t, 3 * h * hd), dtype=qs.dtype)
    dq, dk, dv = _heads(dqkv, h)
    dmask = np.zeros((b, h, t, k.shape[-2]), dtype=qs.dtype) if mask_grad else None
    if cos is None:
        _attention_backward(g4, qs, k, v, o4, saved, scale, dq, dk, dv, dmask)
    else:                                                          # gradients of the rotated q, k, then un-rotate
        dq_rot, dk_rot = np.empty(qs.shape, qs.dtype), np.empty(k.shape, k.dtype)
        _attention_backward(g4, qs, k, v, o4, saved, scale, dq_rot, dk_rot, dv, dmask)
        rotate_pairs(dq_rot, cos, sin, inverse=True, out=dq)
        rotate_pairs(dk_rot, cos, sin, inverse=True, out=dk)
    return (dqkv,) if dmask is None else (dqkv, dmask)


ATTENTION_KERNELS = {"scaled_dot_product_attention": blocked_sdpa, "fused_qkv_attention": blocked_qkv_attention}

# %% [markdown]
# Both kernels equal their textbook twins (`fn.textbook`, module 09's code, run with every
# kernel switched off): the output and the gradients of q, k, v (or of the packed qkv) and of
# a float mask, with and without the causal mask, boolean and float masks, fully masked rows,
# dropout, the long blocked path, RoPE and the KV cache.

# %%
import pytest
import tinytorch.core.attention as _attention
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import no_grad

def _att_run(fn, arrays, dtype, call, textbook_mode):
    ts = [Tensor(a.astype(dtype), dtype=dtype, requires_grad=True) for a in arrays]
    manual_seed(3)                                                   # the same dropout draw for both
    with (textbook() if textbook_mode else contextlib.nullcontext()):
        out = call(fn, *ts)
    out.backward(np.random.default_rng(7).standard_normal(out.shape).astype(dtype))
    return [out.data] + [t.grad.data for t in ts]

def _assert_attention_twins(op, arrays, call, rtol32=2e-5):
    kernel, twin = ATTENTION_KERNELS[op], getattr(_attention, op).textbook
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, rtol32)):
        fast, slow = _att_run(kernel, arrays, dtype, call, False), _att_run(twin, arrays, dtype, call, True)
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert a.dtype == b.dtype == dtype and a.shape == b.shape, (op, i)
            err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
            assert err <= rtol, f"{op} {np.dtype(dtype).name}: {'value' if i == 0 else f'gradient {i}'} differs by {err:.2e} relative"
    ts = [Tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    was = enabled()
    try:
        register_kernel(op, kernel)
        assert call(getattr(_attention, op), *ts).grad_fn == op          # registration on
        register_kernel(op, None)
        assert call(getattr(_attention, op), *ts).grad_fn != op          # off: the textbook runs
    finally:
        (enable if was else disable)()

def _qkv(*shapes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(s) for s in shapes]

_DEAD = np.random.default_rng(1).random((6, 9)) > 0.3
_DEAD[2] = False                                                     # a row that may read nothing

@pytest.mark.parametrize("shapes,kw", [
    (((2, 3, 7, 8),) * 3, dict()),
    (((2, 3, 7, 8),) * 3, dict(is_causal=True)),
    (((2, 5, 8), (2, 9, 8), (2, 9, 4)), dict(is_causal=True, scale=0.3)),          # T_q != T_k: top-left
    (((2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 8)), dict(mask=_DEAD)),
    (((2, 3, 6, 8), (2, 3, 9, 8), (2, 3, 9, 8)), dict(mask=np.where(_DEAD, 0.0, -np.inf), is_causal=True)),
    (((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)), dict(dropout_p=0.4, is_causal=True)),
    (((1, 2, 200, 16),) * 3, dict(is_causal=True)),                                # blocks of 64 query rows
    (((1, 2, 130, 16), (1, 2, 200, 16), (1, 2, 200, 16)), dict(is_causal=True, mask=np.ones(200, bool)))])
def test_blocked_sdpa_equals_textbook(shapes, kw):
    _assert_attention_twins("scaled_dot_product_attention", _qkv(*shapes), lambda f, q, k, v: f(q, k, v, **kw))

def test_blocked_sdpa_large_scores_and_mask_gradient_equal_textbook():
    q, k, v = _qkv((2, 5, 8), (2, 6, 8), (2, 6, 3))
    q[..., 0] += 30.0                                             # scores near 900: exp overflows unless shifted
    k[..., 0] = 30.0 + 0.05 * k[..., 0]
    assert len(_blocks(200, 200, 0)) == 4 and not _scores_are_small(q / math.sqrt(8), k)
    _assert_attention_twins("scaled_dot_product_attention", [q, k, v], lambda f, q, k, v: f(q, k, v, is_causal=True),
                            rtol32=1e-3)                          # float32 scores near 900 carry errors of 5e-5
    arrays = _qkv((2, 3, 6, 8), (2, 3, 7, 8), (2, 3, 7, 8), (2, 1, 6, 7), seed=2)   # a learnable additive bias
    _assert_attention_twins("scaled_dot_product_attention", arrays, lambda f, q, k, v, m: f(q, k, v, mask=m))

def _rope_tables(t, hd, positions=None):
    from tinytorch.core.embeddings import RotaryEmbedding
    cos, sin = RotaryEmbedding(hd, max_seq_len=256).tables(t, positions, np.float64)
    return (cos, sin) if positions is None else (cos[:, None], sin[:, None])

@pytest.mark.parametrize("case", ["causal", "rope", "rope_positions_mask", "bool_mask", "long"])
def test_blocked_qkv_attention_equals_textbook(case):
    t = 200 if case == "long" else 9
    qkv = _qkv((2, t, 48), seed=4)
    cos, sin = _rope_tables(t, 4, np.array([np.arange(t), np.arange(t) + 5]) if case == "rope_positions_mask" else None)
    if case == "causal": call = lambda f, a: f(a, 4)
    elif case in ("rope", "long"): call = lambda f, a: f(a, 4, rope_cos=cos, rope_sin=sin)
    elif case == "bool_mask": call = lambda f, a: f(a, 4, causal=False, mask=_qkv((2, 1, 1, t))[0] > -0.5, dropout_p=0.2)
    else:
        qkv.append(_qkv((2, 1, t, t), seed=5)[0])
        call = lambda f, a, m: f(a, 4, mask=m, rope_cos=cos, rope_sin=sin)
    _assert_attention_twins("fused_qkv_attention", qkv, call)

@pytest.mark.parametrize("causal", [True, False])
def test_blocked_qkv_attention_kv_cache_equals_textbook(causal):
    x = _qkv((2, 12, 48), seed=6)[0]
    cos, sin = _rope_tables(12, 4)
    outs, caches = [], []
    for fn in (blocked_qkv_attention, _attention.fused_qkv_attention.textbook):
        cache = KVCache(2, 4, 16, 4, dtype=np.float64)
        with no_grad(), textbook():
            outs.append(np.concatenate([fn(Tensor(x[:, a:b], dtype=np.float64), 4, causal, None, cos[a:b], sin[a:b],
                                           0.0, cache).data for a, b in [(0, 5), (5, 6), (6, 9), (9, 10), (10, 12)]], 1))
        caches.append(cache)
    assert np.abs(outs[0] - outs[1]).max() <= 1e-12 * np.abs(outs[1]).max()
    assert np.abs(caches[0].keys - caches[1].keys).max() <= 1e-15 and caches[0].length == caches[1].length == 12

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
import tinytorch.models.transformer as _gpt
import tinytorch.models.llama as _llama

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
