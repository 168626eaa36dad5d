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
# # 10 Attention
# > Scaled dot-product attention from matmul, mask and softmax; multi-head attention and the KV cache.
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
# Everything in this module is composed of ops you already have: `matmul`, `transpose`,
# `masked_fill`, module 04's `softmax` and module 05's `dropout`, so autograd derives every
# backward pass. For $T$ tokens, $S$ and $P$ hold $T^2$ numbers per head and each of these
# ops writes its own copy; module 18 replaces the two public functions with a fused kernel
# that makes fewer passes over them and skips the half a causal mask hides, tested equal to
# the code you write here. At a few hundred tokens that kernel runs attention's forward and
# backward about twice as fast, because the $T^2$ arrays are what the time goes into.
#
# **How to test.** You write the causal mask, `scaled_dot_product_attention`, the KV cache's
# `append` and the multi-head `fused_qkv_attention`; `MultiHeadAttention` is given. In Jupyter, the
# `run_tests(...)` cell after each group prints PASS, FAIL (with where and by how much) or TODO
# per test. From the shell, `tito module test 10` runs the notebook's tests, and
# `tito module complete 10` tests, exports and runs the package tests
# (`tests/test_10_attention.py`: PyTorch parity in float64 for values and every gradient).

# %%
#| default_exp core.attention

# %%
#| export
import math
import numpy as np
from tinytorch.core.tensor import Tensor, grad_mode, replaceable
from tinytorch.core.autograd import no_grad
from tinytorch.core.activations import softmax
from tinytorch.core.layers import Module, Linear, dropout
from tinytorch.core.embeddings import RotaryEmbedding, apply_rotary

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
# Either must broadcast to the scores' shape `(..., T_q, T_k)`. `split_mask` checks a mask
# and returns it as an additive `bias` or a boolean `blocked` array (True = blocked).
#
# **Causal masking** hides the future: query $i$ may read key $j$ only if $j \le i + \text{offset}$.
# `future_mask(T_q, T_k, offset)` is the boolean matrix that is True where $j > i + \text{offset}$:
# `np.triu` of a matrix of ones, starting `offset + 1` diagonals above the main one.
# `is_causal=True` uses offset 0, PyTorch's convention (aligned to the top-left corner: with
# $T_q \ne T_k$, query $i$ sees keys $0 \ldots i$). Decoding with a KV cache needs the
# bottom-right alignment instead: the new queries sit at positions `length … length + T_q - 1`
# of the cached sequence, so the offset is the number of cached positions.
#
# **A row with every key blocked** has no distribution to speak of. Naively it is $0/0$ =
# NaN, which would poison a whole batch. Like PyTorch, we define its output as 0 and its
# gradients as 0: the row reads nothing.

# %%
#| export
def future_mask(tq, tk, offset=0):
    """Boolean array (tq, tk), True where key j lies in the future of query i: j > i + offset.

    offset 0 is `is_causal`'s top-left alignment; with a KV cache, offset is the number of cached positions."""
    ### BEGIN SOLUTION
    return np.triu(np.ones((tq, tk), dtype=bool), k=offset + 1)
    ### END SOLUTION


def split_mask(mask, scores_shape, dtype, who):
    """Check an attention mask against the scores' shape (..., T_q, T_k); return (bias, blocked).

    A boolean mask (True = may attend) gives (None, ~mask); a float mask gives (mask as an array of `dtype`,
    None), or (the Tensor itself, None) if it requires a gradient. Arrays come with at least two dimensions."""
    if mask is None: return None, None
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
    if t is not None and t.requires_grad and m.dtype.kind == "f": return t, None
    if m.ndim < 2: m = m.reshape((1,) * (2 - m.ndim) + m.shape)
    if m.dtype == np.bool_: return None, ~m
    return m.astype(dtype, copy=False), None


def check_qkv(q, k, v, who):
    "Raise a clear error unless q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v) fit together and share a float dtype."
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

# %%
import pytest
from tito.notebook import run_tests, assert_close

def test_future_mask_alignment():
    assert future_mask(3, 5, 2).tolist() == [[False, False, False, True, True],   # 3 new queries after 2 cached keys
                                             [False, False, False, False, True],
                                             [False, False, False, False, False]]
    assert future_mask(3, 3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert future_mask(2, 4).tolist() == [[False, True, True, True], [False, False, True, True]]   # top-left

def test_split_mask():
    bias, blocked = split_mask(np.array([True, False, True]), (2, 4, 3), np.float32, "f")
    assert bias is None and blocked.shape == (1, 3) and blocked.tolist() == [[False, True, False]]
    bias, blocked = split_mask(np.zeros((4, 3)), (2, 4, 3), np.float32, "f")
    assert blocked is None and bias.dtype == np.float32
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4\) does not broadcast to the attention scores' shape \(3, 4, 3\)"):
        split_mask(np.ones((2, 4), bool), (3, 4, 3), np.float32, "f")
    with pytest.raises(TypeError, match="mask must be boolean .* or floating .*, got dtype int64"):
        split_mask(np.ones((4, 3), np.int64), (4, 3), np.float32, "f")

if __name__ == "__main__":
    run_tests("test_future_mask_alignment", "test_split_mask")

# %% [markdown]
# ## `scaled_dot_product_attention`
#
# The public functional form, PyTorch's signature: `q (..., T_q, d)`, `k (..., T_k, d)`,
# `v (..., T_k, d_v)` with identical leading dimensions, any number of them (`(T, d)`,
# `(B, T, d)`, `(B, H, T, d)`, …). Step by step:
#
# 1. scores `S = (q @ kᵀ) · scale`, with `scale` $= 1/\sqrt d$ unless given (`k.transpose(-2, -1)`);
# 2. add the float mask; set blocked scores (boolean mask, `is_causal`) to $-\infty$ with
#    `masked_fill`. `mask` and `is_causal` may be combined (PyTorch forbids that); a key must
#    then pass both;
# 3. rows whose scores are all $-\infty$ read nothing: fill them with 0 before the softmax
#    (so it stays finite) and their weights with 0 after it;
# 4. `P = softmax(S)` over the keys; `dropout(P, dropout_p)` whenever `dropout_p` is positive,
#    as in PyTorch's functional form (modules pass 0 in eval mode);
# 5. `O = P @ v`.
#
# float32 in, float32 out: scores, weights and gradients all stay in the inputs' dtype.
# `@replaceable` lets module 18 register its fused kernel under this name.

# %%
#| export
@replaceable("scaled_dot_product_attention")
def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, dropout_p=0.0, scale=None):
    """softmax(q kᵀ · scale + mask) v: a Tensor (..., T_q, d_v) in q's dtype, composed of graph ops.

    q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v); scale defaults to 1/sqrt(d). The mask arrives
    split by `split_mask`: add `bias` (None, array or Tensor) to the scores and set them to -inf where
    `blocked` (None or boolean, True = blocked) or, if `is_causal`, `future_mask(T_q, T_k)` is True.
    A row with every key blocked outputs 0 (and passes no gradient)."""
    who = "scaled_dot_product_attention"
    check_qkv(q, k, v, who)
    if not 0.0 <= dropout_p <= 1.0: raise ValueError(f"{who}: dropout_p must be in [0, 1], got {dropout_p}")
    bias, blocked = split_mask(mask, q.shape[:-1] + (k.shape[-2],), q.dtype, who)
    ### BEGIN SOLUTION
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if is_causal:
        future = future_mask(q.shape[-2], k.shape[-2])
        blocked = future if blocked is None else blocked | future
    s = (q @ k.transpose(-2, -1)) * scale
    if bias is not None: s = s + bias
    if blocked is not None: s = s.masked_fill(blocked, -np.inf)
    dead = None
    if bias is not None or blocked is not None:
        dead = np.isneginf(s.data).all(axis=-1, keepdims=True)        # rows that may read no key
        if dead.any(): s = s.masked_fill(dead, 0.0)
        else: dead = None
    p = softmax(s, axis=-1)
    if dead is not None: p = p.masked_fill(dead, 0.0)
    if dropout_p > 0.0: p = dropout(p, dropout_p)
    return p @ v
    ### END SOLUTION

# %%
from tinytorch.core.autograd import gradcheck
from tinytorch.core.tensor import manual_seed

def _naive_attention(q, k, v, blocked=None, scale=None, bias=None):
    "Reference in float64 NumPy, one softmax per row; a fully blocked row gives 0."
    s = (q @ np.swapaxes(k, -1, -2)) * (scale if scale is not None else 1 / np.sqrt(q.shape[-1]))
    if bias is not None: s = s + bias
    if blocked is not None: s = np.where(blocked, -np.inf, s)
    m = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(m), 0, m))
    z = e.sum(-1, keepdims=True)
    return (e / np.where(z == 0, 1, z)) @ v

def _t(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), dtype=np.float64, requires_grad=True)

def test_sdpa_values():
    q, k, v = _t(2, 3, 4), _t(2, 5, 4, seed=1), _t(2, 5, 6, seed=2)
    sdpa, ins = scaled_dot_product_attention, {"q": q, "k": k, "v": v}
    assert_close(sdpa(q, k, v), _naive_attention(q.data, k.data, v.data), rtol=1e-12, atol=1e-14, inputs=ins)
    keep = np.random.default_rng(3).random((3, 5)) > 0.3
    assert_close(sdpa(q, k, v, mask=keep), _naive_attention(q.data, k.data, v.data, ~keep), rtol=1e-12, atol=1e-14,
                 inputs={**ins, "mask": keep}, name="output with a boolean mask")
    bias = np.random.default_rng(4).standard_normal((3, 5))
    assert_close(sdpa(q, k, v, mask=bias), _naive_attention(q.data, k.data, v.data, bias=bias), rtol=1e-12,
                 atol=1e-14, inputs={**ins, "mask": bias}, name="output with a float mask")
    top_left = np.tril(np.ones((3, 5), bool))                              # is_causal: PyTorch's top-left alignment
    assert_close(sdpa(q, k, v, is_causal=True), _naive_attention(q.data, k.data, v.data, ~top_left), rtol=1e-12,
                 atol=1e-14, inputs=ins, name="causal output")
    assert_close(sdpa(q, k, v, scale=0.3), _naive_attention(q.data, k.data, v.data, scale=0.3), rtol=1e-12,
                 atol=1e-14, inputs=ins, name="output with scale=0.3")

def test_sdpa_gradcheck():
    q, k, v = _t(2, 3, 4), _t(2, 5, 4, seed=1), _t(2, 5, 3, seed=2)
    keep = np.random.default_rng(3).random((2, 3, 5)) > 0.4
    keep[0, 1] = False                                                     # one fully masked row
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v), [q, k, v])
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask=keep), [q, k, v])
    assert gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])
    bias = _t(3, 5, seed=4)                                                 # a learnable additive bias
    assert gradcheck(lambda q, k, v, b: scaled_dot_product_attention(q, k, v, mask=b), [q, k, v, bias])

def test_sdpa_fully_masked_row_reads_nothing():
    q, k, v = _t(3, 4), _t(3, 4, seed=1), _t(3, 2, seed=2)
    keep = np.ones((3, 3), bool); keep[1] = False
    for mask in (keep, np.where(keep, 0.0, -np.inf)):                      # boolean, and a float mask of -inf
        out = scaled_dot_product_attention(q, k, v, mask=mask)
        out.sum().backward()
        assert np.array_equal(out.data[1], [0.0, 0.0]) and np.array_equal(q.grad.data[1], np.zeros(4))
        assert np.isfinite(k.grad.data).all() and np.isfinite(v.grad.data).all()
        assert_close(out.data[[0, 2]], _naive_attention(q.data, k.data, v.data)[[0, 2]], rtol=1e-12, atol=1e-14)
        q.grad = k.grad = v.grad = None

def test_sdpa_dropout():
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
    y = scaled_dot_product_attention(q, q, q, is_causal=True, mask=np.zeros((4, 4)))
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

if __name__ == "__main__":
    run_tests("test_sdpa_*")

# %% [markdown]
# ### What attention looks at
#
# With `v` the identity matrix, `P @ v = P`: attention returns its own weights. Below, six
# words get random 16-dimensional vectors (the same vector for both "the") that serve as
# queries and keys at once. Without a mask each word reads mostly itself and its twin; the
# causal mask empties the upper triangle, so "the" at position 0 can read only itself while
# the second "the" splits its attention between both.

# %%
if __name__ == "__main__":
    _words = ["the", "cat", "sat", "on", "the", "mat"]
    _vocab = {w: i for i, w in enumerate(dict.fromkeys(_words))}
    _x = Tensor(1.5 * np.random.default_rng(0).standard_normal((len(_vocab), 16))[[_vocab[w] for w in _words]])
    _eye = Tensor(np.eye(len(_words), dtype=np.float32))
    try:
        _weights = {causal: scaled_dot_product_attention(_x, _x, _eye, is_causal=causal).data for causal in (False, True)}
    except NotImplementedError as e:
        _weights = None
        print("skipped until the stubs above are written:", e)
    try:
        import matplotlib
    except ImportError:
        matplotlib = None
        print("matplotlib not installed: skipping the heatmaps; the causal weights are")
        if _weights is not None: print(np.round(_weights[True], 2))
    if matplotlib is not None and _weights is not None:
        from tito.notebook import in_notebook
        if not in_notebook(): matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, causal in zip(axes, (False, True)):
            im = ax.imshow(_weights[causal], cmap="viridis", vmin=0, vmax=1)
            ax.set(title="causal" if causal else "no mask", xlabel="key", ylabel="query",
                   xticks=range(6), xticklabels=_words, yticks=range(6), yticklabels=_words)
        fig.colorbar(im, ax=axes, label="attention weight")
        plt.show() if in_notebook() else plt.close(fig)

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
        """Write the arrays k, v (B, H, T_new, head_dim) at positions length … length+T_new-1 and advance `length`.

        Return views (keys, values) of every cached position, each (B, H, length, head_dim). If the cache
        cannot hold T_new more positions, raise ValueError("KVCache overflow: ...") and change nothing."""
        expected = self.keys.shape[:2] + self.keys.shape[3:]
        if k.shape != v.shape or k.ndim != 4 or k.shape[:2] + k.shape[3:] != expected:
            raise ValueError(f"KVCache: keys {k.shape} and values {v.shape} must both have shape (B, H, T_new, head_dim) "
                             f"= ({expected[0]}, {expected[1]}, T_new, {expected[2]})")
        if k.dtype != self.dtype:
            raise TypeError(f"KVCache holds {self.dtype} but got keys of dtype {k.dtype}; create it with dtype={k.dtype}")
        ### BEGIN SOLUTION
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

if __name__ == "__main__":
    run_tests("test_kv_cache_append_and_errors")

# %% [markdown]
# ## Multi-head attention
#
# One attention reads one kind of relation. Multi-head attention runs $H$ of them side by
# side on slices of width $d_h = C/H$ and concatenates the results:
#
# 1. `qkv_proj`, one `Linear(C, 3C)`, projects `x (B, T, C)` to queries, keys and values at
#    once (one GEMM instead of three). Its output columns are `[q | k | v]`, and within each
#    of them head $h$ owns columns $h\,d_h \ldots (h+1)\,d_h - 1$: GPT-2's `c_attn` layout.
# 2. `fused_qkv_attention` takes that packed `(B, T, 3C)` tensor: it slices q, k and v,
#    reshapes each to `(B, T, H, d_h)` and transposes it to `(B, H, T, d_h)`; optionally
#    rotates q and k with RoPE (`apply_rotary`, module 09); runs `scaled_dot_product_attention`
#    over all `B·H` heads at once; and merges the heads back with the inverse transpose and
#    reshape to `(B, T, C)`.
# 3. `out_proj`, a `Linear(C, C)`, mixes the heads.
#
# `dropout` (as in nanoGPT's `CausalSelfAttention`) applies to the attention weights and to
# the output of `out_proj`, in training mode only.
#
# **With a KV cache** (inference): the new keys and values are appended to the cache and the
# new queries attend to every cached position. Causal attention then needs the bottom-right
# alignment: `block_future` adds `future_mask(T, T_k, offset)`, offset being the number of
# positions cached before the call, to the user's mask. This path records no graph (it runs
# under `no_grad`); RoPE positions default to `length … length + T - 1`.

# %%
#| export
def block_future(mask, tq, tk, offset):
    "`mask` (None, boolean or float) with the keys in `future_mask(tq, tk, offset)` blocked as well."
    future = future_mask(tq, tk, offset)
    if mask is None: return ~future
    m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype == np.bool_: return m & ~future
    return np.where(future, -np.inf, m) if m.dtype.kind == "f" else mask    # other dtypes: sdpa names the error


@replaceable("fused_qkv_attention")
def fused_qkv_attention(qkv, num_heads, causal=True, mask=None, rope_cos=None, rope_sin=None, dropout_p=0.0,
                        kv_cache=None, scale=None):
    """Attention of every head of a packed projection qkv (B, T, 3C) = [q | k | v]: a Tensor (B, T, C).

    Head h of q is columns h*d_h:(h+1)*d_h of the first C (d_h = C / num_heads). rope_cos/rope_sin
    ((T, d_h/2) or (B, 1, T, d_h/2)) rotate q and k with `apply_rotary`. With `kv_cache`, k and v are
    appended to it (`KVCache.append`) and the queries attend to all cached positions (causal: `block_future`
    with offset = positions cached before). `mask`, `dropout_p`, `scale` go to `scaled_dot_product_attention`."""
    who = "fused_qkv_attention"
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"{who}: expected packed q|k|v of shape (B, T, 3C) with C divisible by num_heads={num_heads}, "
                         f"got {qkv.shape}")
    if qkv.dtype.kind != "f": raise TypeError(f"{who}: expected a floating-point tensor, got dtype {qkv.dtype}")
    if kv_cache is not None and grad_mode.enabled and qkv.requires_grad:
        raise RuntimeError(f"{who}: attention with a KV cache is for inference; call it under no_grad()")
    ### BEGIN SOLUTION
    b, t, c3 = qkv.shape
    c, hd = c3 // 3, c3 // (3 * num_heads)
    q, k, v = (qkv[:, :, i * c:(i + 1) * c].reshape(b, t, num_heads, hd).transpose(1, 2) for i in range(3))
    if rope_cos is not None:
        q, k = apply_rotary(q, rope_cos, rope_sin), apply_rotary(k, rope_cos, rope_sin)
    if kv_cache is not None:
        offset = kv_cache.length
        k, v = (Tensor(a, dtype=a.dtype) for a in kv_cache.append(k.data, v.data))
        if causal and offset:
            mask, causal = block_future(mask, t, k.shape[-2], offset), False
    y = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=causal, dropout_p=dropout_p, scale=scale)
    return y.transpose(1, 2).reshape(b, t, c)
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
        """x (B, T, C) -> out_proj(dropout'd attention of qkv_proj(x)), a Tensor (B, T, C).

        RoPE tables come from `self.rope.tables(T, token_positions, x.dtype)`, positions defaulting to
        length … length+T-1 of `kv_cache` (0 … T-1 without one); (B, T, d/2) tables get a head axis.
        Dropout p = self.dropout in training mode, 0 in eval mode, on the weights and on the output."""
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention: expected input of shape (batch, seq_len, {self.embed_dim}), "
                             f"got {x.shape}")
        if token_positions is not None and self.rope is None:
            raise ValueError("MultiHeadAttention: token_positions are only used by RoPE, and this layer has rope=None")
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
        p = self.dropout if self.training else 0.0
        y = fused_qkv_attention(self.qkv_proj(x), self.num_heads, self.causal, mask, cos, sin, p, kv_cache)
        return dropout(self.out_proj(y), p, self.training)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}, dropout={self.dropout}"

# %% [markdown]
# Tests: the layer against a NumPy reference that loops over the heads, finite-difference
# gradients, causality, and incremental decoding with a cache against the full forward.

# %%
from tinytorch.core.autograd import grad

def _numpy_mha(mha, x, positions=None):
    "The layer in float64 NumPy, one head at a time (GPT-2's column layout, interleaved RoPE)."
    def linear(a, lin): return a @ lin.weight.data.T + (0 if lin.bias is None else lin.bias.data)
    def rope(a, pos):
        ang = pos[:, None] * mha.rope.theta ** (-np.arange(0, a.shape[-1], 2) / a.shape[-1])
        out = np.empty_like(a)
        out[..., 0::2] = a[..., 0::2] * np.cos(ang) - a[..., 1::2] * np.sin(ang)
        out[..., 1::2] = a[..., 0::2] * np.sin(ang) + a[..., 1::2] * np.cos(ang)
        return out
    b, t, c = x.shape
    hd = mha.head_dim
    qkv = linear(x, mha.qkv_proj)
    heads = []
    for h in range(mha.num_heads):
        q, k, v = (qkv[..., i * c + h * hd:i * c + (h + 1) * hd] for i in range(3))
        if mha.rope is not None:
            pos = np.arange(t) if positions is None else positions
            q, k = rope(q, pos), rope(k, pos)
        heads.append(_naive_attention(q, k, v, future_mask(t, t) if mha.causal else None))
    return linear(np.concatenate(heads, axis=-1), mha.out_proj)

@pytest.mark.parametrize("use_rope,causal", [(False, True), (True, True), (False, False)])
def test_mha_matches_numpy(use_rope, causal):
    manual_seed(0)
    mha = MultiHeadAttention(8, 2, causal=causal, rope=RotaryEmbedding(4, max_seq_len=16) if use_rope else None).double()
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    assert_close(mha(Tensor(x, dtype=np.float64)), _numpy_mha(mha, x), rtol=1e-12, atol=1e-13, inputs={"x": x})

def test_mha_gradcheck():
    manual_seed(1)
    mha = MultiHeadAttention(4, 2, rope=RotaryEmbedding(2, max_seq_len=8)).double()
    x = _t(2, 3, 4, seed=5)
    assert gradcheck(lambda x: mha(x), [x])
    cos, sin = RotaryEmbedding(2, max_seq_len=8).tables(4, np.array([[3, 1, 0, 5], [0, 1, 2, 3]]), np.float64)
    qkv, bias = _t(2, 4, 12), _t(2, 1, 4, 4, seed=1)                        # per-batch positions, a learnable bias
    assert gradcheck(lambda a, b: fused_qkv_attention(a, 2, mask=b, rope_cos=cos[:, None], rope_sin=sin[:, None]),
                     [qkv, bias])

def test_mha_causality():
    manual_seed(1)
    mha = MultiHeadAttention(6, 3, rope=RotaryEmbedding(2, max_seq_len=8)).double()
    x = Tensor(np.random.default_rng(2).standard_normal((1, 4, 6)), dtype=np.float64, requires_grad=True)
    y = mha(x).data
    x2 = x.data.copy(); x2[0, 2:] += 1.0                                   # change the future
    y2 = mha(Tensor(x2, dtype=np.float64)).data
    assert np.array_equal(y[0, :2], y2[0, :2]) and not np.allclose(y[0, 2:], y2[0, 2:])
    (gx,) = grad(mha(x)[:, 1].sum(), [x])                                  # output 1 depends on inputs 0 and 1 only
    assert np.all(gx.data[:, 2:] == 0.0) and np.all(np.abs(gx.data[:, :2]).sum(-1) > 0)

def test_mha_kv_cache_equals_full_forward():
    manual_seed(2)
    mha = MultiHeadAttention(8, 2, rope=RotaryEmbedding(4, max_seq_len=16)).double()
    x = Tensor(np.random.default_rng(3).standard_normal((2, 7, 8)), dtype=np.float64)
    full = mha(x).data
    cache = KVCache(2, 2, 16, 4, dtype=np.float64)
    steps = [mha(x[:, :3], kv_cache=cache)] + [mha(x[:, i:i + 1], kv_cache=cache) for i in range(3, 7)]
    assert cache.length == 7 and all(s._node is None for s in steps)        # no graph on the cache path
    assert_close(np.concatenate([s.data for s in steps], axis=1), full, rtol=0, atol=1e-13,
                 name="outputs decoded with the cache")

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

if __name__ == "__main__":
    run_tests("test_mha_*")

# %%
if __name__ == "__main__":
    manual_seed(0)
    mha = MultiHeadAttention(embed_dim=16, num_heads=4)
    print(mha)
    try:
        print("output:", mha(Tensor(np.random.default_rng(0).standard_normal((2, 10, 16)))).shape)
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. In the heatmap cell, multiply the word vectors by 0.2 and by 5: small scores spread each
#    row's weight almost evenly over the visible keys, large ones concentrate it on the single
#    best match (the softmax saturates), which is what the $1/\sqrt d$ scaling guards against.
# 2. Time `MultiHeadAttention(64, 4)` on `(1, T, 64)` inputs for T = 128, 256, 512, forward
#    and backward: the time grows about four-fold per doubling once the $T \times T$ scores
#    dominate. Then `import tinytorch` and time `tinytorch.core.attention.MultiHeadAttention`
#    with module 18's kernels switched on and off (`tinytorch.accel.enable()` / `disable()`).
# 3. Generate with a KV cache and look at `cache.keys[0, 0, :cache.length]` after each step:
#    one new row per token, the earlier rows never change, so nothing before is recomputed.
