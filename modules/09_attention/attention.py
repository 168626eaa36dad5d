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
# # 09 Attention
# > Scaled dot-product attention as one fused op, causal masks, multi-head attention and the KV cache.
#
# Attention lets every position read from every other position it is allowed to see. Each
# position emits a *query* (what it looks for), a *key* (what it offers) and a *value* (what
# it hands over). With queries $Q$ of shape `(T_q, d)`, keys $K$ `(T_k, d)` and values $V$
# `(T_k, d_v)`:
#
# $$S = \frac{Q K^\top}{\sqrt d}, \qquad P = \operatorname{softmax}_{\text{rows}}(S + M), \qquad O = P V.$$
#
# Row $i$ of $P$ is a probability distribution over the keys: how much position $i$ reads
# from each. $M$ is the mask: $-\infty$ where reading is forbidden (a future token in a
# language model, padding), so that the softmax gives those keys weight exactly 0. The
# $1/\sqrt d$ keeps the scores' variance near 1 whatever the width, so the softmax does not
# saturate at initialisation.
#
# This is the hot path of a GPT: for a sequence of $T$ tokens, $S$ and $P$ have $T^2$
# entries per head. So attention here is a *fused op*: one graph node whose forward runs
# the whole formula in NumPy on arrays it owns (in place wherever possible) and whose
# backward is written by hand. Composing it from `matmul`, `softmax`, `masked_fill` and
# `transpose` graph ops would give the same numbers, with several extra $T^2$ temporaries
# and graph nodes per layer.

# %%
#| default_exp core.attention

# %%
#| export
import math
import numpy as np
from tinytorch.core.tensor import Tensor, record, get_rng, grad_mode
from tinytorch.core.autograd import derivative, no_grad
from tinytorch.core.layers import Module, Linear, dropout
from tinytorch.core.embeddings import RotaryEmbedding, rotate_pairs as _rotate_pairs

# %% [markdown]
# ## Masks
#
# We follow PyTorch's `scaled_dot_product_attention` convention exactly:
#
# - a **boolean** mask says where attention is *allowed*: `True` = may attend, `False` =
#   blocked (score set to $-\infty$);
# - a **float** mask is *added* to the scores (use `-inf` or a large negative number to
#   block, any other value as a bias such as ALiBi). If the float mask is a tensor that
#   requires a gradient it receives one: $\partial L / \partial M = \partial L / \partial S$.
#
# Either must broadcast to the scores' shape `(..., T_q, T_k)`.
#
# **Causal masking** hides the future: query $i$ may read key $j$ only if $j \le i + \text{offset}$.
# `is_causal=True` in `scaled_dot_product_attention` uses offset 0, PyTorch's convention
# (the mask is aligned to the top-left corner: with $T_q \ne T_k$, query $i$ sees keys
# $0 \ldots i$). `MultiHeadAttention` decoding with a KV cache needs the bottom-right
# alignment instead: the new queries sit at positions `length … length + T_q - 1` of the
# cached sequence, so its offset is the number of cached positions. The boolean
# "future" matrix for each `(T_q, T_k, offset)` is built once with `np.triu` and cached,
# not allocated on every call.
#
# **A row with every key blocked** has no distribution to speak of. Naively it is $0/0$ =
# NaN, which would poison a whole batch. Like PyTorch (2.13 here), we define its output as 0 and
# its gradients as 0: the row reads nothing.

# %%
#| export
_FUTURE_MASKS = {}


def _future_mask(tq, tk, offset):
    "Cached boolean (tq, tk) array, True where key j lies in the future of query i (j > i + offset)."
    key = (tq, tk, offset)
    m = _FUTURE_MASKS.get(key)
    if m is None:
        if len(_FUTURE_MASKS) >= 64 or sum(a.nbytes for a in _FUTURE_MASKS.values()) > 32 << 20:
            _FUTURE_MASKS.clear()                 # bounded: decoding creates a new (1, n) mask per token
        m = _FUTURE_MASKS[key] = np.triu(np.ones((tq, tk), dtype=bool), k=offset + 1)
        m.flags.writeable = False
    return m


def _prepare_mask(mask, scores_shape, who):
    "Split a user mask into (additive float array, blocked boolean array, mask tensor needing grad)."
    if mask is None: return None, None, None
    t = mask if isinstance(mask, Tensor) else None
    m = mask.data if t is not None else np.asarray(mask)
    if m.dtype.kind not in "bf":
        raise TypeError(f"{who}: mask must be boolean (True = may attend) or floating (added to the scores), "
                        f"got dtype {m.dtype}")
    try:
        fits = np.broadcast_shapes(m.shape, scores_shape) == tuple(scores_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{who}: mask of shape {m.shape} does not broadcast to the attention scores' shape "
                         f"{tuple(scores_shape)} (..., T_q, T_k)")
    if m.ndim < 2: m = m.reshape((1,) * (2 - m.ndim) + m.shape)
    if m.dtype == np.bool_: return None, ~m, None
    return m, None, (t if t is not None and t.requires_grad else None)

# %%
import pytest

def test_future_mask_is_cached_and_aligned():
    m = _future_mask(3, 5, 2)                     # bottom-right: 3 new queries after 2 cached keys
    assert m.tolist() == [[False, False, False, True, True],
                          [False, False, False, False, True],
                          [False, False, False, False, False]]
    assert _future_mask(3, 5, 2) is m and not m.flags.writeable
    assert _future_mask(3, 3, 0).tolist() == np.triu(np.ones((3, 3), bool), 1).tolist()

def test_prepare_mask():
    add, blocked, t = _prepare_mask(np.array([True, False, True]), (2, 4, 3), "f")
    assert add is None and t is None and blocked.shape == (1, 3) and blocked.tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4\) does not broadcast to the attention scores' shape \(3, 4, 3\)"):
        _prepare_mask(np.ones((2, 4), bool), (3, 4, 3), "f")
    with pytest.raises(TypeError, match="mask must be boolean .* or floating .*, got dtype int64"):
        _prepare_mask(np.ones((4, 3), np.int64), (4, 3), "f")

# %% [markdown]
# ## The forward kernel
#
# Work on arrays of shape `(..., T, d)`: NumPy's `matmul` treats the leading axes as a batch
# and runs one BLAS GEMM per `(T, d)` slice. Strided views (the heads of a packed q|k|v
# projection) go straight to BLAS without a copy as long as each row is contiguous.
#
# The $T_q \times T_k$ arrays are what cost time: every pass over them reads and writes
# megabytes. A textbook implementation makes about seven such passes (scores, mask, row
# max, subtract, exp, row sum, divide). We make two or three:
#
# 1. **Fold the scale into the queries.** `(q · s) Kᵀ` costs `T_q·d` multiplications,
#    `(q Kᵀ) · s` costs `T_q·T_k`.
# 2. **Mask in place** with `np.copyto(scores, -inf, where=blocked)`, which broadcasts a
#    `(T_q, T_k)` boolean matrix over all heads without building a full-size mask.
# 3. **Skip the row maximum when it cannot matter.** The softmax is invariant to subtracting
#    any constant per row; the maximum is subtracted only so that `exp` cannot overflow
#    (float32 overflows above 88.7). By Cauchy–Schwarz every score obeys
#    $|q_i \cdot k_j| \le \lVert q_i\rVert\,\lVert k_j\rVert$, a bound that costs `O(T·d)` to
#    compute. When it is below 40 (float32; 300 for float64) no score can overflow and
#    none that is not masked can underflow to 0, so we take `exp` of the raw scores. Otherwise
#    (and whenever a float mask is added, whose values we cannot bound) we subtract the row
#    maximum first: the classic stable softmax.
# 4. **Normalise the output, not the weights.** With $E = \exp(S)$ and row sums
#    $z = E\,\mathbf 1$ (a matrix–vector product, several times faster through BLAS than
#    `sum(axis=-1)`), $O = \operatorname{diag}(1/z)\,E V$: dividing the `(T, d)` output is far
#    cheaper than dividing the `(T, T)` weights. $P = E/z$ is never formed.
# 5. **Skip what the causal mask hides.** For long causal sequences the queries are
#    processed in blocks of 64 rows; block `[r0, r1)` can only see keys `< r1 + offset`, so
#    its scores, `exp` and `E V` product use only that prefix of the keys, and only its last
#    columns need masking. The fully masked upper-right part of $S$ is never computed: at
#    $T = 256$ (four blocks) the quadratic work drops to 10/16 of the full matrix, and
#    forward + backward ran ~1.6× faster than unblocked in our measurement (one core).
#
# A row whose keys are all masked has $E = 0$ and $z = 0$; we set its $1/z$ to 0, so it
# outputs 0 and (below) receives and passes no gradient.
#
# Dropout on the attention weights (when `dropout_p > 0`) multiplies $E$ by a random mask
# scaled by $1/(1-p)$, exactly like `Dropout`.
#
# The kernel writes $O$ into an `out` array it is given (for multi-head attention, a strided
# view of the merged `(B, T, C)` output, so merging the heads costs nothing) and returns
# what the backward pass needs: per block its rows, key prefix, $E$, $1/z$ and dropout mask.

# %%
#| export
_BLOCK_ROWS = 64          # query rows per block when causal blocks are skipped
_MIN_BLOCKED_LEN = 128    # shorter query sequences are processed in one block
_EXP_SAFE = {np.dtype(np.float32): 40.0, np.dtype(np.float64): 300.0}


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
    ### BEGIN SOLUTION
    if shift:
        m = s.max(axis=-1, keepdims=True)
        m[np.isneginf(m)] = 0.0                                   # fully masked rows: keep them at exp(-inf) = 0
        s -= m
    np.exp(s, out=s)
    z = np.matmul(s, np.ones(s.shape[-1], dtype=s.dtype))[..., None]      # row sums through BLAS
    rz = np.zeros_like(z)
    np.divide(1.0, z, out=rz, where=z > 0)
    return s, rz
    ### END SOLUTION


def _attention_forward(qs, k, v, out, add=None, blocked=None, causal_offset=None, dropout_p=0.0):
    "O = softmax(qs kᵀ + mask) v written into `out`; returns [(r0, r1, kend, E, 1/z, dropout mask)] per block."
    ### BEGIN SOLUTION
    tq, tk = qs.shape[-2], k.shape[-2]
    shift = add is not None or not _scores_are_small(qs, k)
    future = None if causal_offset is None else _future_mask(tq, tk, causal_offset)
    kT = np.swapaxes(k, -1, -2)
    saved = []
    for r0, r1, kend in _blocks(tq, tk, causal_offset):
        s = np.matmul(qs[..., r0:r1, :], kT[..., :kend])
        if add is not None: s += _rows(add, r0, r1, kend)
        if blocked is not None: np.copyto(s, -np.inf, where=_rows(blocked, r0, r1, kend))
        if future is not None:
            c0 = max(0, min(kend, r0 + causal_offset + 1))        # keys before c0 are visible to every row here
            if c0 < kend: np.copyto(s[..., c0:], -np.inf, where=future[r0:r1, c0:kend])
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
    ### END SOLUTION

# %%
def _naive_attention(q, k, v, blocked=None, scale=None):
    "Reference in float64, one softmax per row, fully blocked rows give 0."
    s = (q @ np.swapaxes(k, -1, -2)) * (scale if scale is not None else 1 / np.sqrt(q.shape[-1]))
    if blocked is not None: s = np.where(blocked, -np.inf, s)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(m), 0, m))
    z = e.sum(-1, keepdims=True)
    return (e / np.where(z == 0, 1, z)) @ v

def _run_forward(q, k, v, **kw):
    out = np.empty(q.shape[:-1] + v.shape[-1:])
    saved = _attention_forward(q / np.sqrt(q.shape[-1]), k, v, out, **kw)
    return out, saved

def test_forward_kernel_matches_naive():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 7, 4)), rng.standard_normal((2, 7, 3))
    assert np.allclose(_run_forward(q, k, v)[0], _naive_attention(q, k, v), atol=1e-14)
    out, saved = _run_forward(q, k, v, causal_offset=2)
    assert np.allclose(out, _naive_attention(q, k, v, _future_mask(5, 7, 2)), atol=1e-14)
    _, _, _, e, rz, _ = saved[0]
    assert np.allclose((e * rz).sum(-1), 1.0)                              # P = E / z: rows sum to 1

def test_large_scores_take_the_shifted_path():
    rng = np.random.default_rng(4)
    q, k, v = 30 * rng.standard_normal((2, 5, 8)), 30 * rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 6, 3))
    assert _scores_are_small(q[:, :, :1] / 100, k) and not _scores_are_small(q, k)
    for dtype in (np.float64, np.float32):                                 # exp(900) would overflow either dtype
        out, _ = _run_forward(q.astype(dtype), k.astype(dtype), v.astype(dtype))
        assert np.isfinite(out).all() and np.allclose(out, _naive_attention(q, k, v), atol=1e-4)

def test_fully_masked_row_reads_nothing():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    blocked = np.zeros((3, 3), bool); blocked[1] = True
    for add in (None, np.zeros((3, 3))):                                   # with and without the max shift
        out, saved = _run_forward(q, k, v, blocked=blocked, add=add)
        assert np.array_equal(out[1], [0.0, 0.0]) and saved[0][4][1, 0] == 0.0
        assert np.isfinite(out).all() and np.allclose(out[[0, 2]], _naive_attention(q, k, v, blocked)[[0, 2]])

def test_causal_blocks_skip_the_future(monkeypatch):
    monkeypatch.setitem(globals(), "_MIN_BLOCKED_LEN", 4)
    monkeypatch.setitem(globals(), "_BLOCK_ROWS", 3)
    assert _blocks(8, 8, 0) == [(0, 3, 3), (3, 6, 6), (6, 8, 8)] and _blocks(8, 10, 2) == [(0, 3, 5), (3, 6, 8), (6, 8, 10)]
    assert _blocks(8, 8, None) == [(0, 8, 8)] and _blocks(3, 8, 5) == [(0, 3, 8)]
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 10, 4)), rng.standard_normal((2, 10, 3))
    out, saved = _run_forward(q, k, v, causal_offset=2)
    assert len(saved) == 3 and np.allclose(out, _naive_attention(q, k, v, _future_mask(8, 10, 2)), atol=1e-14)

# %% [markdown]
# ## The backward kernel
#
# Given $G = \partial L/\partial O$, with $P = E/z$ the attention weights and $P_d$ the
# weights after dropout (or $P$):
#
# $$dV = P_d^\top G, \qquad dP = G V^\top \;(\odot \text{ dropout mask}), \qquad
#   dS = P \odot \big(dP - \operatorname{rowsum}(dP \odot P)\big),$$
# $$dQ = s\, dS\, K, \qquad dK = dS^\top (s\, Q).$$
#
# $dS$ is the softmax backward of module 03, inlined. Its row sums need not touch a
# $T \times T$ array: $\operatorname{rowsum}(dP \odot P) = \operatorname{rowsum}(G \odot O)$,
# because both equal $\sum_{j,c} G_{ic} V_{jc} P_{d,ij}$. That is a `(T, d)` product, the
# trick FlashAttention uses too.
#
# Since we kept $E$ and $1/z$ instead of $P$, we move the $1/z$ onto the small arrays: with
# $G' = G/z$ (row-wise) and $\delta' = \operatorname{rowsum}(G \odot O)/z$,
# $dV = E_d^\top G'$ and $dS = E \odot (G' V^\top - \delta')$. Masked keys have $E = 0$ and get
# no gradient; a fully masked row has $1/z = 0$ and passes nothing back. The blocks of the
# forward pass are replayed: each contributes its rows of $dQ$ and adds into the key prefix of
# $dK$ and $dV$. Results are written into arrays the caller passes (views into the gradient
# of a packed q|k|v tensor, for multi-head attention).

# %%
#| export
def _attention_backward(g, qs, k, v, out, saved, scale, dq, dk, dv, dmask=None):
    "Write dL/dq, dL/dk, dL/dv (and dL/dscores into dmask) for O = attention(qs/scale, k, v), given g = dL/dO."
    ### BEGIN SOLUTION
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
    ### END SOLUTION

# %% [markdown]
# ## `scaled_dot_product_attention`
#
# The public functional form, PyTorch's signature: `q (..., T_q, d)`, `k (..., T_k, d)`,
# `v (..., T_k, d_v)` with identical leading dimensions, any number of them (`(T, d)`,
# `(B, T, d)`, `(B, H, T, d)`, …). `scale` defaults to $1/\sqrt d$. `dropout_p` is applied
# whenever it is positive, as in PyTorch's functional form (modules pass 0 in eval mode).
# `mask` and `is_causal` may be combined (PyTorch forbids that); a key must then pass both.
# float32 in, float32 out: scores, weights and gradients all stay in the inputs' dtype.

# %%
#| export
def _check_qkv(q, k, v, who):
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"{who}: q, k, v must have the same rank >= 2 (..., T, d); got q {q.shape}, k {k.shape}, v {v.shape}")
    if q.shape[:-2] != k.shape[:-2] or v.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"{who}: q, k, v must have the same leading dimensions; got q {q.shape}, k {k.shape}, v {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{who}: q and k must have the same last dimension d; got q {q.shape}, k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{who}: k and v must have the same number of positions T_k; got k {k.shape}, v {v.shape}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype.kind != "f":
        raise TypeError(f"{who}: q, k, v must share one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}")


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    "softmax(q kᵀ · scale + mask) v over (..., T, d) tensors, as one fused op (PyTorch's mask convention)."
    ### BEGIN SOLUTION
    who = "scaled_dot_product_attention"
    _check_qkv(q, k, v, who)
    if not 0.0 <= dropout_p <= 1.0: raise ValueError(f"{who}: dropout_p must be in [0, 1], got {dropout_p}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    tq, tk = q.shape[-2], k.shape[-2]
    add, blocked, mask_t = _prepare_mask(mask, q.shape[:-1] + (tk,), who)
    qs = q.data * scale
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    saved = _attention_forward(qs, k.data, v.data, out, add, blocked, 0 if is_causal else None, dropout_p)
    inputs = (q, k, v) if mask_t is None else (q, k, v, mask_t)
    return record("sdpa", out, inputs, (qs, k.data, v.data, out, saved, scale, mask_t is not None))
    ### END SOLUTION


@derivative("sdpa")
def _sdpa_backward(g, qs, k, v, out, saved, scale, mask_grad):
    ### BEGIN SOLUTION
    g = np.ascontiguousarray(g)
    dq, dk, dv = np.empty(qs.shape, qs.dtype), np.empty(k.shape, k.dtype), np.empty(v.shape, v.dtype)
    dmask = np.zeros(out.shape[:-1] + (k.shape[-2],), dtype=qs.dtype) if mask_grad else None
    _attention_backward(g, qs, k, v, out, saved, scale, dq, dk, dv, dmask)
    return (dq, dk, dv) if dmask is None else (dq, dk, dv, dmask)
    ### END SOLUTION

# %%
from tinytorch.core.autograd import gradcheck

def _t(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), dtype=np.float64, requires_grad=True)

def test_sdpa_values():
    q, k, v = _t(2, 3, 4), _t(2, 5, 4, seed=1), _t(2, 5, 6, seed=2)
    assert np.allclose(scaled_dot_product_attention(q, k, v).data, _naive_attention(q.data, k.data, v.data), atol=1e-14)
    keep = np.random.default_rng(3).random((3, 5)) > 0.3
    assert np.allclose(scaled_dot_product_attention(q, k, v, mask=keep).data,
                       _naive_attention(q.data, k.data, v.data, ~keep), atol=1e-14)
    bias = np.where(keep, 0.0, -np.inf)                                    # float mask: added to the scores
    assert np.allclose(scaled_dot_product_attention(q, k, v, mask=bias).data,
                       scaled_dot_product_attention(q, k, v, mask=keep).data, atol=1e-14)
    top_left = np.tril(np.ones((3, 5), bool))                              # is_causal: PyTorch's top-left alignment
    assert np.allclose(scaled_dot_product_attention(q, k, v, is_causal=True).data,
                       scaled_dot_product_attention(q, k, v, mask=top_left).data, atol=1e-14)
    assert np.allclose(scaled_dot_product_attention(q, k, v, scale=0.3).data,
                       _naive_attention(q.data, k.data, v.data, scale=0.3), atol=1e-14)

def test_sdpa_gradcheck():
    q, k, v = _t(2, 3, 4), _t(2, 5, 4, seed=1), _t(2, 5, 3, seed=2)
    keep = np.random.default_rng(3).random((2, 3, 5)) > 0.4
    keep[0, 1] = False                                                     # one fully masked row
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v), [q, k, v])
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=keep), [q, k, v])
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])
    bias = _t(3, 5, seed=4)                                                 # a learnable additive bias
    assert gradcheck(lambda q, k, v, b: scaled_dot_product_attention(q, k, v, mask=b), [q, k, v, bias])

def test_sdpa_dropout():
    from tinytorch.core.tensor import manual_seed
    q, k, v = _t(4, 6, 3), _t(4, 6, 3, seed=1), _t(4, 6, 3, seed=2)
    manual_seed(0); a = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    manual_seed(0); b = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert np.array_equal(a.data, b.data) and not np.allclose(a.data, scaled_dot_product_attention(q, k, v).data)
    def f(q, k, v):
        manual_seed(7)
        return scaled_dot_product_attention(q, k, v, dropout_p=0.3)
    assert gradcheck(f, [q, k, v])

def test_sdpa_float32_stays_float32():
    q = Tensor(np.random.default_rng(0).standard_normal((2, 4, 8)), requires_grad=True)
    y = scaled_dot_product_attention(q, q, q, is_causal=True)
    y.sum().backward()
    assert y.dtype == np.float32 and q.grad.dtype == np.float32

def test_sdpa_errors():
    a, b = Tensor(np.ones((2, 3, 4))), Tensor(np.ones((3, 3, 4)))
    with pytest.raises(ValueError, match=r"same leading dimensions; got q \(2, 3, 4\), k \(3, 3, 4\)"):
        scaled_dot_product_attention(a, b, b)
    with pytest.raises(ValueError, match=r"q and k must have the same last dimension d; got q \(2, 3, 4\), k \(2, 3, 5\)"):
        scaled_dot_product_attention(a, Tensor(np.ones((2, 3, 5))), a)
    with pytest.raises(ValueError, match=r"k and v must have the same number of positions T_k"):
        scaled_dot_product_attention(a, a, Tensor(np.ones((2, 4, 4))))
    with pytest.raises(ValueError, match="same rank >= 2"):
        scaled_dot_product_attention(Tensor(np.ones(4)), Tensor(np.ones(4)), Tensor(np.ones(4)))
    with pytest.raises(TypeError, match="share one floating dtype; got float32, float64, float32"):
        scaled_dot_product_attention(a, Tensor(np.ones((2, 3, 4)), dtype=np.float64), a)
    with pytest.raises(ValueError, match=r"mask of shape \(4, 4\) does not broadcast"):
        scaled_dot_product_attention(a, a, a, mask=np.ones((4, 4), bool))

# %% [markdown]
# ## The KV cache
#
# When a language model generates, token $t$ needs the keys and values of tokens
# $0 \ldots t-1$, which the previous steps already computed. Recomputing them costs $O(t)$
# per layer per step, $O(T^2)$ for the whole text. A KV cache stores them instead: each step
# projects only the new token, appends its key and value, and attends from the one new
# query to all cached positions.
#
# `KVCache(batch_size, num_heads, max_seq_len, head_dim)` holds one layer's cache: two
# preallocated arrays of shape `(B, H, max_seq_len, head_dim)` (float32 unless `dtype` is
# given) and `length`, the number of positions filled. Appending writes into the arrays;
# nothing is reallocated. A model with $L$ layers uses $L$ caches; all have the same
# `length`, which is also the position of the next token. `reset()` starts a new sequence.
# Appending past `max_seq_len` raises an error rather than silently dropping context.

# %%
#| export
class KVCache:
    "Preallocated keys and values of one attention layer: arrays (B, H, max_seq_len, head_dim) and `length`."
    def __init__(self, batch_size, num_heads, max_seq_len, head_dim, dtype=np.float32):
        shape = (batch_size, num_heads, max_seq_len, head_dim)
        if min(shape) <= 0: raise ValueError(f"KVCache: sizes must be positive, got (B, H, max_seq_len, head_dim) = {shape}")
        self.keys = np.zeros(shape, dtype=dtype)
        self.values = np.zeros(shape, dtype=dtype)
        self.length = 0

    batch_size = property(lambda self: self.keys.shape[0])
    num_heads = property(lambda self: self.keys.shape[1])
    max_seq_len = property(lambda self: self.keys.shape[2])
    head_dim = property(lambda self: self.keys.shape[3])
    dtype = property(lambda self: self.keys.dtype)

    def reset(self):
        "Forget the cached positions (the arrays are kept and reused)."
        self.length = 0

    def append(self, k, v):
        "Store new keys/values (B, H, T_new, head_dim); return views of all cached keys and values."
        ### BEGIN SOLUTION
        expected = self.keys.shape[:2] + self.keys.shape[3:]
        if k.shape != v.shape or k.ndim != 4 or k.shape[:2] + k.shape[3:] != expected:
            raise ValueError(f"KVCache: keys {k.shape} and values {v.shape} must both have shape (B, H, T_new, head_dim) "
                             f"= ({expected[0]}, {expected[1]}, T_new, {expected[2]})")
        if k.dtype != self.dtype:
            raise TypeError(f"KVCache holds {self.dtype} but got keys of dtype {k.dtype}; create it with dtype={k.dtype}")
        n, t = self.length, k.shape[2]
        if n + t > self.max_seq_len:
            raise ValueError(f"KVCache overflow: it holds {n} of max_seq_len {self.max_seq_len} positions and cannot "
                             f"append {t} more; reset() it or create it with a larger max_seq_len")
        self.keys[:, :, n:n + t] = k
        self.values[:, :, n:n + t] = v
        self.length = n + t
        return self.keys[:, :, :n + t], self.values[:, :, :n + t]
        ### END SOLUTION

    def __repr__(self):
        return (f"KVCache(batch_size={self.batch_size}, num_heads={self.num_heads}, max_seq_len={self.max_seq_len}, "
                f"head_dim={self.head_dim}, length={self.length}, dtype={self.dtype})")

# %%
def test_kv_cache_append_and_errors():
    cache = KVCache(2, 3, 5, 4)
    k1 = np.ones((2, 3, 2, 4), np.float32)
    keys, values = cache.append(k1, 2 * k1)
    assert cache.length == 2 and keys.shape == (2, 3, 2, 4) and np.array_equal(values, 2 * k1)
    keys, _ = cache.append(3 * k1[:, :, :1], k1[:, :, :1])
    assert cache.length == 3 and np.array_equal(keys[:, :, 2], 3 * k1[:, :, 0])
    with pytest.raises(ValueError, match="KVCache overflow: it holds 3 of max_seq_len 5 positions and cannot append 3 more"):
        cache.append(np.ones((2, 3, 3, 4), np.float32), np.ones((2, 3, 3, 4), np.float32))
    assert cache.length == 3                                                 # unchanged by the failed append
    with pytest.raises(ValueError, match=r"must both have shape \(B, H, T_new, head_dim\) = \(2, 3, T_new, 4\)"):
        cache.append(np.ones((1, 3, 1, 4), np.float32), np.ones((1, 3, 1, 4), np.float32))
    with pytest.raises(TypeError, match="KVCache holds float32 but got keys of dtype float64"):
        cache.append(np.ones((2, 3, 1, 4)), np.ones((2, 3, 1, 4)))
    cache.reset()
    assert cache.length == 0 and "length=0" in repr(cache)

# %% [markdown]
# ## Multi-head attention
#
# One attention reads one kind of relation. Multi-head attention runs $H$ of them side by
# side on slices of width $d_h = C/H$ and concatenates the results:
#
# 1. `qkv_proj`, one `Linear(C, 3C)`, projects `x (B, T, C)` to queries, keys and values at
#    once (one GEMM instead of three). Its output columns are `[q | k | v]`, and within each
#    of them head $h$ owns columns $h\,d_h \ldots (h+1)\,d_h - 1$: GPT-2's `c_attn` layout.
# 2. Each of q, k, v is viewed as `(B, T, H, d_h)` and transposed to `(B, H, T, d_h)`:
#    strided views of the projection's output, no copy.
# 3. Optionally RoPE rotates q and k, then attention runs over all `B·H` heads at once,
#    writing its output straight into the `(B, T, H, d_h)` = `(B, T, C)` layout.
# 4. `out_proj`, a `Linear(C, C)`, mixes the heads.
#
# Steps 2–3 form one fused op, `fused_qkv_attention`, from the packed `(B, T, 3C)` tensor to
# the merged `(B, T, C)` output. Its backward writes $dQ$, $dK$, $dV$ directly into the three
# slices of one `(B, T, 3C)` gradient (un-rotating dQ and dK for RoPE), so the head split and
# merge cost neither graph nodes nor copies.
#
# `dropout` (as in nanoGPT's `CausalSelfAttention`) applies to the attention weights and to
# the output of `out_proj`, in training mode only.
#
# **With a KV cache** (inference): the new keys and values are appended to the cache and the
# new queries attend to every cached position, causally offset by the number of positions
# cached before the call. This path records no graph (it runs under `no_grad`); RoPE
# positions default to `length … length + T - 1`.

# %%
#| export
def _heads(a, num_heads):
    "Views (B, H, T, d_h) of q, k, v inside a packed (B, T, 3C) array."
    b, t, c3 = a.shape
    a = a.reshape(b, t, 3, num_heads, c3 // (3 * num_heads))
    return tuple(a[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def fused_qkv_attention(qkv, num_heads, causal=True, mask=None, rope_cos=None, rope_sin=None, dropout_p=0.0,
                        kv_cache=None, scale=None):
    "Packed qkv (B, T, 3C) -> split heads, optional RoPE, attention, merge heads -> (B, T, C), as one op."
    ### BEGIN SOLUTION
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
        qs = _rotate_pairs(q, rope_cos, rope_sin)
        qs *= scale
        k = _rotate_pairs(k, rope_cos, rope_sin)
    else:
        qs = q * scale
    offset = 0
    if kv_cache is not None:
        if grad_mode.enabled and qkv.requires_grad:
            raise RuntimeError(f"{who}: attention with a KV cache is for inference; call it under no_grad()")
        offset = kv_cache.length
        k, v = kv_cache.append(k, v)
    add, blocked, mask_t = _prepare_mask(mask, (b, num_heads, t, k.shape[-2]), who)
    out = np.empty((b, t, c), dtype=qkv.dtype)
    o4 = out.reshape(b, t, num_heads, hd).transpose(0, 2, 1, 3)        # heads merged for free
    saved = _attention_forward(qs, k, v, o4, add, blocked, offset if causal else None, dropout_p)
    inputs = (qkv,) if mask_t is None else (qkv, mask_t)
    return record("fused_qkv_attention", out, inputs,
                  (qs, k, v, o4, saved, scale, num_heads, rope_cos, rope_sin, mask_t is not None))
    ### END SOLUTION


@derivative("fused_qkv_attention")
def _fused_qkv_attention_backward(g, qs, k, v, o4, saved, scale, num_heads, cos, sin, mask_grad):
    ### BEGIN SOLUTION
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
        _rotate_pairs(dq_rot, cos, sin, inverse=True, out=dq)
        _rotate_pairs(dk_rot, cos, sin, inverse=True, out=dk)
    return (dqkv,) if dmask is None else (dqkv, dmask)
    ### END SOLUTION


class MultiHeadAttention(Module):
    "GPT-style multi-head self-attention: fused qkv_proj = Linear(C, 3C), out_proj = Linear(C, C)."
    def __init__(self, embed_dim, num_heads, bias=True, dropout=0.0, causal=True, rope=None):
        super().__init__()
        if num_heads <= 0 or embed_dim <= 0 or embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
                             if num_heads > 0 and embed_dim > 0 else
                             f"MultiHeadAttention: embed_dim and num_heads must be positive, got {embed_dim}, {num_heads}")
        if not 0.0 <= dropout < 1.0: raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.causal = dropout, causal
        self.qkv_proj = Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        if rope is not None:
            if not isinstance(rope, RotaryEmbedding):
                raise TypeError(f"MultiHeadAttention: rope must be a RotaryEmbedding or None, got {type(rope).__name__}")
            if rope.dim != self.head_dim:
                raise ValueError(f"MultiHeadAttention: rope.dim {rope.dim} must equal head_dim {self.head_dim} "
                                 f"(embed_dim {embed_dim} / num_heads {num_heads})")
        self.rope = rope

    def forward(self, x, kv_cache=None, token_positions=None, mask=None):
        ### BEGIN SOLUTION
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: expected input of shape (batch, seq_len, {self.embed_dim}), "
                             f"got {x.shape}")
        if kv_cache is not None and grad_mode.enabled:
            with no_grad():
                return self.forward(x, kv_cache, token_positions, mask)
        t = x.shape[1]
        cos = sin = None
        if self.rope is not None:
            if token_positions is None:
                start = 0 if kv_cache is None else kv_cache.length
                token_positions = np.arange(start, start + t)
            cos, sin = self.rope.tables(t, token_positions, x.dtype)
            if cos.ndim == 3: cos, sin = cos[:, None], sin[:, None]      # (B, T, d/2): one angle for all heads
        elif token_positions is not None:
            raise ValueError("MultiHeadAttention: token_positions are only used by RoPE, and this layer has rope=None")
        p = self.dropout if self.training else 0.0
        y = fused_qkv_attention(self.qkv_proj(x), self.num_heads, self.causal, mask, cos, sin, p, kv_cache)
        return dropout(self.out_proj(y), p, self.training)
        ### END SOLUTION

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}, dropout={self.dropout}"

# %% [markdown]
# Tests: the fused op against the composition of graph ops it replaces, exact gradients for
# every parameter, causality, and incremental decoding with a cache against the full forward.

# %%
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import grad

def _composed_mha(mha, x, rope_positions=None):
    "The same layer written with ordinary graph ops (reshape, transpose, sdpa) as a reference."
    b, t, c = x.shape
    h, hd = mha.num_heads, mha.head_dim
    qkv = mha.qkv_proj(x)
    q, k, v = (qkv[:, :, i * c:(i + 1) * c].reshape(b, t, h, hd).transpose(1, 2) for i in range(3))
    if mha.rope is not None: q, k = mha.rope(q, rope_positions), mha.rope(k, rope_positions)
    y = scaled_dot_product_attention(q, k, v, is_causal=mha.causal)
    return mha.out_proj(y.transpose(1, 2).reshape(b, t, c))

@pytest.mark.parametrize("use_rope", [False, True])
def test_mha_matches_composed_ops(use_rope):
    manual_seed(0)
    mha = MultiHeadAttention(8, 2, rope=RotaryEmbedding(4, max_seq_len=16) if use_rope else None).double()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 5, 8)), dtype=np.float64, requires_grad=True)
    params = [x] + list(mha.parameters())
    y = mha(x)
    ref = _composed_mha(mha, x)
    assert np.allclose(y.data, ref.data, atol=1e-13)
    gy = np.random.default_rng(1).standard_normal(y.shape)
    for a, b in zip(grad(y, params, gy), grad(ref, params, gy)):
        assert np.allclose(a.data, b.data, atol=1e-12)

def test_fused_qkv_attention_gradcheck():
    cos, sin = RotaryEmbedding(2, max_seq_len=8).tables(4, np.array([[3, 1, 0, 5], [0, 1, 2, 3]]), np.float64)
    cos, sin = cos[:, None], sin[:, None]                                   # per-batch positions, shared by heads
    qkv, bias = _t(2, 4, 12), _t(2, 1, 4, 4, seed=1)                        # C = 4, two heads of width 2
    assert gradcheck(lambda a: fused_qkv_attention(a, 2), [qkv])
    assert gradcheck(lambda a, b: fused_qkv_attention(a, 2, mask=b, rope_cos=cos, rope_sin=sin), [qkv, bias])
    assert gradcheck(lambda a: fused_qkv_attention(a, 4, causal=False, mask=np.tril(np.ones((4, 4), bool)).T), [_t(1, 4, 12)])

def test_mha_causality():
    manual_seed(1)
    mha = MultiHeadAttention(6, 3, rope=RotaryEmbedding(2, max_seq_len=8)).double()
    x = Tensor(np.random.default_rng(2).standard_normal((1, 4, 6)), dtype=np.float64)
    y = mha(x).data
    x2 = x.data.copy(); x2[0, 2:] += 1.0                                   # change the future
    y2 = mha(Tensor(x2, dtype=np.float64)).data
    assert np.allclose(y[0, :2], y2[0, :2], atol=1e-14) and not np.allclose(y[0, 2:], y2[0, 2:])

def test_mha_kv_cache_equals_full_forward():
    manual_seed(2)
    mha = MultiHeadAttention(8, 2, rope=RotaryEmbedding(4, max_seq_len=16)).double()
    x = Tensor(np.random.default_rng(3).standard_normal((2, 7, 8)), dtype=np.float64)
    full = mha(x).data
    cache = KVCache(2, 2, 16, 4, dtype=np.float64)
    steps = [mha(x[:, :3], kv_cache=cache)] + [mha(x[:, i:i + 1], kv_cache=cache) for i in range(3, 7)]
    assert cache.length == 7 and all(s._node is None for s in steps)        # no graph on the cache path
    assert np.allclose(np.concatenate([s.data for s in steps], axis=1), full, rtol=0, atol=1e-13)

def test_mha_errors():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 3"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="rope.dim 4 must equal head_dim 2"):
        MultiHeadAttention(8, 4, rope=RotaryEmbedding(4))
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, seq_len, 8\), got \(5, 8\)"):
        mha(Tensor(np.ones((5, 8))))
    with pytest.raises(ValueError, match="token_positions are only used by RoPE"):
        mha(Tensor(np.ones((1, 2, 8))), token_positions=np.arange(2))
    with pytest.raises(ValueError, match="KVCache overflow"):
        mha(Tensor(np.ones((1, 5, 8))), kv_cache=KVCache(1, 2, 4, 4))

# %%
if __name__ == "__main__":
    manual_seed(0)
    mha = MultiHeadAttention(embed_dim=16, num_heads=4)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 10, 16)))
    print(mha)
    print("output:", mha(x).shape, mha(x).dtype)
