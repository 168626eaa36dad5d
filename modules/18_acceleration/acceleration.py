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
# # 18 Acceleration
# > Fused kernels with hand-written backward passes, each equal to its textbook twin, switched on by one call.
#
# The textbook functions of modules 01-17 build every idea from earlier ops and let autograd
# derive the backward pass: clear, and slow. A LayerNorm written with `mean`, `-`, `*` and
# `sqrt` is a dozen graph nodes, each with its own temporaries. A *fused kernel* computes the
# same function in a few NumPy passes and states its derivative as one op in the table.
#
# Each kernel has the signature of the textbook function it replaces and is tested equal to it
# in `tests/test_18_acceleration.py` (values and every gradient in float64 to 1e-10 relative
# and float32, the same errors; for attention every mask, dropout, RoPE and the KV cache).
# `enable()` registers them all with module 01's `register_kernel`; `tinytorch/__init__.py`
# calls it once, visibly, except in a learner's package before this module is completed
# (`tinytorch/_kernels.txt` says `textbook`) or with `TINYTORCH_KERNELS=textbook`.

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
# ## Softmax, GELU, linear layers and cross-entropy
#
# Six kernels replace textbook functions of modules 04-06: `gelu` (both forms), `silu`,
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
# Both rules need only the forward output; row sums go through BLAS as a product with a ones vector.
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
    "module 04's gelu as one op: 'gelu' saving (x, Phi(x)), or 'gelu_tanh' saving (x, tanh u)."
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
    "module 04's silu as one op 'silu', saving (x, sigmoid(x))."
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
    "module 04's softmax as one op 'softmax', saving its output."
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
    "module 04's log_softmax as one op 'log_softmax', saving its output."
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
    "module 05's linear as one op 'linear': the leading dims flattened into one GEMM."
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
    "module 06's cross_entropy as one op 'cross_entropy', saving exp(x - m) and its row sums."
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
# ## Attention
#
# Module 10's attention is six graph ops, each allocating a $T_q \times T_k$ array per head.
# `blocked_sdpa` is one op: two or three passes over the scores, and a written-out backward:
#
# 1. **Fold the scale into the queries:** `(q · s) Kᵀ` costs `T_q·d` multiplications, not `T_q·T_k`.
# 2. **Mask in place:** `np.copyto(scores, -inf, where=blocked)` broadcasts a `(T_q, T_k)` mask over heads.
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
# `blocked_qkv_attention` replaces module 10's `fused_qkv_attention`: it takes strided head
# views of the packed `(B, T, 3C)` projection, applies RoPE, writes the merged `(B, T, C)`
# output directly, and its backward fills the three slices of one `(B, T, 3C)` gradient.

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
    "module 10's split_mask as (additive array or None, blocked array or None, mask tensor needing grad or None)."
    bias, blocked = split_mask(mask, scores_shape, dtype, who)
    if isinstance(bias, Tensor): return bias.data, blocked, bias
    return bias, blocked, None


def blocked_sdpa(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    "module 10's scaled_dot_product_attention as one op 'scaled_dot_product_attention'."
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
    "module 10's fused_qkv_attention as one op 'fused_qkv_attention': heads are views, the output is merged in place."
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
# ## LayerNorm, the GPT-2 MLP, RMSNorm and SwiGLU
#
# Four kernels replace `layer_norm`, `linear_gelu` (module 12), `rms_norm` and `swiglu` (module
# 13). Each views the input as rows `(N, D)`, works in place where it can, records one op, and
# takes row sums through BLAS (a product with a ones vector), faster than `ndarray.sum`.
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
# the derivative is $a + a(1-a)\,h\,(2k + 6kc\,h^2)$.
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
    "module 12's layer_norm as one op 'layer_norm', saving (xhat, rstd, gamma, weight shape, bias shape, x shape)."
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
    "module 12's linear_gelu as one op 'linear_gelu': one GEMM, the tanh GELU in place."
    check_linear_input(x, weight)                        # the checks (and messages) of the textbook's linear
    in_features = weight.shape[1]
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
    "module 13's rms_norm as one op 'rms_norm', saving (xhat, rstd, gamma, weight shape, x shape)."
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
    "module 13's swiglu as one op 'swiglu': three GEMMs and the gate, sharing temporaries."
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
# Your LayerNorm backward must give the gradients autograd derives from the textbook `layer_norm`
# of module 12 (`layer_norm.textbook`), in float64 to 1e-10 relative:

# %%
def test_layer_norm_backward_equals_textbook():
    from tinytorch.models.transformer import layer_norm
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(shape) for shape in ((4, 3, 16), (16,), (16,), (4, 3, 16)))
    results = []
    for fn in (fused_layer_norm, layer_norm.textbook):
        leaves = [Tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w, b)]
        out = fn(leaves[0], (16,), leaves[1], leaves[2])
        out.backward(g)
        results.append([out.data] + [t.grad.data for t in leaves])
    for name, fast, slow in zip(("value", "dx", "dweight", "dbias"), *results):
        err = np.abs(fast - slow).max() / np.abs(slow).max()
        assert err <= 1e-10, f"{name} differs from the textbook by {err:.2e} relative"

# %% [markdown]
# ## Switching the kernels on
#
# `FUSED_KERNELS` maps each replaceable textbook function's name to its kernel. `enable()`
# registers all of them, `disable()` removes them, and `textbook()` is a context in which
# the textbook code runs (the tests use it to compare the two).

# %%
#| export
FUSED_KERNELS = {**ELEMENTWISE_KERNELS, **ATTENTION_KERNELS, **NORM_KERNELS}


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
# ## Experiments to try
#
# 1. Time a GPT training step with `enable()` and inside `with textbook():`: the fused kernels
#    take fewer passes over memory and allocate fewer temporaries, so the step is faster.
# 2. Count the nodes of the graph of one LayerNorm with and without the kernel (follow the
#    inputs of each `_node` back from the output): one node against about ten.
# 3. Run `fused_gelu(x)` and `gelu.textbook(x)` on the same float32 input and print the largest
#    difference: round-off only, which is why the twin tests allow 2e-5 relative in float32.

# %% [markdown]
# ## Run this module's tests
#
# The cell below prints PASS, FAIL (with the reason) or TODO per test. From the shell,
# `tito module test 18` runs the same tests; `tito module complete 18` also exports your
# notebook into `tinytorch/` and runs the package tests.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
