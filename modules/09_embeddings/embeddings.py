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
# # 09 Embeddings
# > Token ids become vectors: embedding tables, learned and sinusoidal positions, and rotary embeddings (RoPE).
#
# A tokenizer (module 08) turns text into integers. A network needs vectors, so the first
# layer of every language model is a lookup table: row `i` of a matrix of shape
# `(vocab_size, embedding_dim)` is the vector of token `i`. The table is trained like any
# weight; its gradient is where the interesting engineering is, because a batch uses the same
# token many times and every use must add to the same row.
#
# Attention (module 10) sees a *set* of vectors: shuffle the tokens and each output is
# shuffled the same way. Word order must therefore be injected, and this module builds the
# three standard ways:
#
# | method | used by | how |
# |---|---|---|
# | learned positions | GPT-2, nanoGPT | a second table indexed by position, added to the token vectors |
# | sinusoidal encoding | the original Transformer | a fixed table of sines and cosines, added to the token vectors |
# | rotary embedding (RoPE) | LLaMA, most models since | rotate each query and key by an angle proportional to its position |
#
# **How to test.** You write the embedding op and its backward, the positional layers'
# forwards, the sinusoidal table and RoPE's rotation. In Jupyter, the `run_tests(...)` cell after
# each group prints PASS, FAIL (with where and by how much) or TODO per test. From the shell,
# `tito module test 9` runs the notebook's tests, and `tito module complete 9` tests, exports
# and runs the package tests (`tests/test_09_embeddings.py`: PyTorch parity in float64).

# %%
#| default_exp core.embeddings

# %%
#| export
import numpy as np
from tinytorch.core.tensor import Tensor, record, get_rng, as_tensor
from tinytorch.core.autograd import derivative
from tinytorch.core.layers import Module, Parameter

# %% [markdown]
# ## Checking token ids
#
# An id outside the table is a bug upstream (a tokenizer with a different vocabulary, an
# off-by-one in sampling). NumPy would raise an anonymous `IndexError` for a large id and,
# worse, silently read row `vocab_size - 1` for the id `-1`. We check the smallest and the
# largest id first and name the offender. Float ids are a type error, not something to round.

# %%
#| export
class TokenIdRangeError(IndexError, ValueError):
    "A token id outside `[0, num_embeddings)` (both an IndexError and a ValueError)."


def check_ids(ids, num_embeddings, who, what="token id", size_name="a vocabulary of size"):
    "The ids (an array, list or Tensor) as an integer array; TypeError/TokenIdRangeError for bad ids, naming `who`."
    data = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{who}: {what}s must be integers, got dtype {data.dtype}"
                        + (" (convert with .long() if the values are whole numbers)" if data.dtype.kind == "f" else ""))
    if data.size:
        lo, hi = data.min(), data.max()
        if lo < 0 or hi >= num_embeddings:
            bad = int(lo if lo < 0 else hi)
            raise TokenIdRangeError(f"{who}: {what} {bad} is out of range for {size_name} {num_embeddings} "
                                    f"(valid: 0 to {num_embeddings - 1})")
    return data

# %% [markdown]
# ## The embedding lookup and its gradient
#
# Forward is a *gather*: `out[..., :] = weight[ids[...], :]`, one `np.take` along axis 0.
#
# Backward is a *scatter-add*: the gradient of row `i` is the sum of the output gradients at
# every position whose id is `i`. `grad[ids] += g` is wrong when an id repeats (NumPy's fancy
# assignment keeps one of the writes); the textbook scatter-add is `np.add.at(grad, ids, g)`,
# which gets it right but runs an unbuffered loop, slow enough to matter in a small GPT's step.
#
# `scatter_add_rows` (given) computes the same sums in *rounds*. Sort the ids stably (so each
# row is summed in its original order, bit-identical to `np.add.at` and PyTorch), order the
# distinct ids by how often they occur, and start an accumulator with each id's first
# occurrence; round k adds the k-th occurrence of every id that has one, and those ids form a
# prefix of the accumulator, so each round is one vectorised gather and one in-place add. The
# number of rounds is the largest multiplicity of an id. You write the op and its backward.

# %%
#| export
def scatter_add_rows(ids, rows, num_rows):
    "An (num_rows, D) array whose row i is the sum of `rows[j]` over all j with ids[j] == i: `np.add.at`, faster."
    out = np.zeros((num_rows, rows.shape[1]), dtype=rows.dtype)
    n = ids.size
    if n == 0: return out
    order = np.argsort(ids, kind="stable")
    ids_sorted = ids[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(ids_sorted[1:], ids_sorted[:-1], out=first[1:])
    starts = np.flatnonzero(first)                         # where each distinct id begins
    rows_sorted = np.take(rows, order, axis=0)
    if starts.size == n:                                   # every id distinct: one assignment
        out[ids_sorted] = rows_sorted
        return out
    counts = np.diff(starts, append=n)
    by_count = np.argsort(-counts, kind="stable")          # most frequent first: round k uses a prefix
    starts, counts = starts[by_count], counts[by_count]
    acc = rows_sorted[starts]                              # first occurrence of every distinct id
    active = np.searchsorted(-counts, -np.arange(1, counts[0]), side="left")   # ids with > k occurrences
    for k in range(1, counts[0]):
        m = active[k - 1]
        acc[:m] += rows_sorted[starts[:m] + k]             # k-th occurrence of the m most frequent ids
    out[ids_sorted[starts]] = acc
    return out


def embedding(ids, weight):
    """Rows of `weight` (num_embeddings, D) picked by integer `ids` of any shape: a Tensor ids.shape + (D,).

    The output array is `weight.data[idx]` (same dtype as weight); record it as op "embedding" with input
    `weight` and saved values `(idx, num_embeddings)`, idx being the checked integer array of ids.
    """
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    idx = check_ids(ids, weight.shape[0], "embedding")
    ### BEGIN SOLUTION
    return record("embedding", np.take(weight.data, idx, axis=0), (weight,), (idx, weight.shape[0]))
    ### END SOLUTION


@derivative("embedding")
def _embedding_backward(g, idx, num_embeddings):
    """Gradient for weight, as a 1-tuple: a (num_embeddings, D) array whose row i sums g over the positions
    where idx == i. g has shape idx.shape + (D,); flatten both and use `scatter_add_rows`."""
    ### BEGIN SOLUTION
    return (scatter_add_rows(idx.reshape(-1), g.reshape(-1, g.shape[-1]), num_embeddings),)
    ### END SOLUTION

# %%
import pytest
from tinytorch.core.tensor import manual_seed
from tinytorch.core.autograd import gradcheck
from tito.notebook import run_tests, assert_close

def test_scatter_add_rows_matches_add_at():
    rng = np.random.default_rng(0)
    for n_ids, vocab in [(50, 5), (50, 1000), (7, 7), (1, 3), (0, 4)]:
        ids = rng.integers(0, vocab, n_ids)
        rows = rng.standard_normal((n_ids, 3))
        expected = np.zeros((vocab, 3)); np.add.at(expected, ids, rows)
        assert_close(scatter_add_rows(ids, rows, vocab), expected, rtol=1e-14, atol=1e-14, inputs={"ids": ids})
    ids = np.array([2, 0, 2, 2])                                # sums in the ids' original order
    rows = np.array([[1e16], [5.0], [1.0], [-1e16]])
    assert scatter_add_rows(ids, rows, 3)[2, 0] == (1e16 + 1.0) - 1e16

def test_embedding_gather_and_gradient():
    w = Tensor(np.arange(12.0).reshape(4, 3), dtype=np.float64, requires_grad=True)
    ids = np.array([[1, 3, 1], [0, 1, 1]])
    out = embedding(ids, w)
    assert out.shape == (2, 3, 3) and np.array_equal(out.data, w.data[ids])
    out.backward(np.ones((2, 3, 3)))
    assert w.grad.data[:, 0].tolist() == [1.0, 4.0, 0.0, 1.0]      # id 1 used four times, id 2 never
    assert gradcheck(lambda w: embedding(ids, w), [w])

def test_embedding_id_errors():
    w = Tensor(np.ones((5, 2)))
    with pytest.raises(IndexError, match=r"token id 5 is out of range for a vocabulary of size 5 \(valid: 0 to 4\)"):
        embedding(np.array([0, 5, 2]), w)
    with pytest.raises(ValueError, match=r"token id -1 is out of range for a vocabulary of size 5"):
        embedding(Tensor([1, -1]), w)
    with pytest.raises(TypeError, match=r"token ids must be integers, got dtype float32 \(convert with .long\(\)"):
        embedding(Tensor([1.0, 2.0]), w)
    with pytest.raises(TypeError, match="got dtype bool"):
        embedding(np.array([True]), w)

if __name__ == "__main__":
    run_tests("test_scatter_add_rows_matches_add_at", "test_embedding_gather_and_gradient", "test_embedding_id_errors")

# %% [markdown]
# ## The Embedding layer
#
# `Embedding(num_embeddings, embedding_dim)` owns the table as its `weight` parameter,
# initialised from N(0, 1) as in PyTorch (GPT-style models re-initialise it with a smaller
# standard deviation; that choice belongs to the model, module 12).

# %%
#| export
class Embedding(Module):
    "A lookup table of `num_embeddings` trainable vectors of size `embedding_dim`."
    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise ValueError(f"{type(self).__name__}: sizes must be positive, got num_embeddings={num_embeddings}, "
                             f"embedding_dim={embedding_dim}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(get_rng().standard_normal((num_embeddings, embedding_dim), dtype=np.float32))

    def forward(self, ids):
        return embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"

# %%
def test_embedding_layer():
    manual_seed(0)
    emb = Embedding(10, 4)
    assert emb.weight.shape == (10, 4) and emb.weight.dtype == np.float32 and repr(emb) == "Embedding(10, 4)"
    manual_seed(0)
    assert np.array_equal(Embedding(10, 4).weight.data, emb.weight.data)          # reproducible
    out = emb(Tensor([[1, 2], [2, 9]]))
    assert out.shape == (2, 2, 4) and out.dtype == np.float32
    out.sum().backward()
    assert emb.weight.grad.dtype == np.float32 and emb.weight.grad.data[2].tolist() == [2.0] * 4
    big = Embedding(1000, 100)
    assert abs(big.weight.data.std() - 1.0) < 0.01 and abs(big.weight.data.mean()) < 0.01   # N(0, 1)
    with pytest.raises(IndexError, match="token id 10 is out of range for a vocabulary of size 10"):
        emb(np.array([10]))

# %% [markdown]
# ## Learned positions
#
# GPT-2 learns one vector per position, exactly like a token table indexed by position
# `0 … max_seq_len - 1`. `PositionalEmbedding(max_seq_len, embedding_dim)` is an `Embedding`
# whose forward takes either a sequence length `T` (positions `offset … offset + T - 1`; the
# offset is for generation with a KV cache, where a new token sits at position `cache.length`)
# or an explicit array of positions. The result has shape `(T, D)` and broadcasts against
# token vectors of shape `(B, T, D)`. A sequence longer than the table is an error that names
# both lengths: it means the model is asked for more context than it was built for.

# %%
#| export
class PositionalEmbedding(Embedding):
    "Learned position vectors: forward(T, offset=0) or forward(positions) gives one row per position."
    def __init__(self, max_seq_len, embedding_dim):
        super().__init__(max_seq_len, embedding_dim)
        self.max_seq_len = max_seq_len

    def forward(self, seq_len_or_positions, offset=0):
        """Position vectors, a Tensor positions.shape + (embedding_dim,): the rows of `self.weight` at the positions
        `_positions(...)` gives (offset .. offset + T - 1 for an int T), looked up with `embedding`."""
        positions = _positions(seq_len_or_positions, offset, self.max_seq_len, type(self).__name__)
        ### BEGIN SOLUTION
        return embedding(positions, self.weight)
        ### END SOLUTION


def _positions(seq_len_or_positions, offset, max_seq_len, who):
    "Validated integer positions: arange(offset, offset + T) for an int T, else the given array."
    if isinstance(seq_len_or_positions, (int, np.integer)):
        end = offset + int(seq_len_or_positions)
        if offset < 0 or end > max_seq_len:
            raise ValueError(f"{who}: positions {offset} to {end - 1} do not fit max_seq_len {max_seq_len} "
                             f"(a sequence of {end} tokens is longer than the model's context of {max_seq_len})")
        return np.arange(offset, end)
    return check_ids(seq_len_or_positions, max_seq_len, who, what="position", size_name="max_seq_len")

# %%
def test_positional_embedding():
    manual_seed(0)
    pos = PositionalEmbedding(8, 3)
    assert np.array_equal(pos(5).data, pos.weight.data[:5]) and np.array_equal(pos(2, offset=6).data, pos.weight.data[6:])
    assert np.array_equal(pos(np.array([[0, 7]])).data, pos.weight.data[[[0, 7]]])
    (pos(4) * 2.0).sum().backward()
    assert pos.weight.grad.data[:, 0].tolist() == [2.0] * 4 + [0.0] * 4
    with pytest.raises(ValueError, match="a sequence of 9 tokens is longer than the model's context of 8"):
        pos(9)
    with pytest.raises(ValueError, match="positions 7 to 8 do not fit max_seq_len 8"):
        pos(2, offset=7)
    with pytest.raises(IndexError, match=r"position 8 is out of range for max_seq_len 8 \(valid: 0 to 7\)"):
        pos(np.array([8]))

if __name__ == "__main__":
    run_tests("test_embedding_layer", "test_positional_embedding")

# %% [markdown]
# ## Sinusoidal encoding
#
# Vaswani et al. (2017) use a fixed table instead of a learned one. With model width $d$,
#
# $$PE_{p,\,2i} = \sin\!\big(p\,/\,b^{2i/d}\big), \qquad PE_{p,\,2i+1} = \cos\!\big(p\,/\,b^{2i/d}\big), \qquad b = 10000.$$
#
# Each pair of columns is a clock running at its own frequency, from one turn every $2\pi$
# positions down to one turn every $2\pi b$ positions, so every position gets a distinct
# pattern, and $PE_{p+k}$ is a fixed rotation of $PE_p$ for every $p$: relative offsets are
# easy to read off. The table is computed in float64 and stored as float32. It has no
# parameters; `SinusoidalPositionalEncoding` has the same forward as `PositionalEmbedding`,
# so the two are interchangeable in a model.

# %%
#| export
def sinusoidal_encoding(max_len, dim, base=10000.0, dtype=np.float32):
    """The (max_len, dim) sinusoidal position table of Vaswani et al., a Tensor of `dtype` computed in float64:
    entry (p, 2i) is sin(p / base**(2i/dim)), entry (p, 2i+1) is cos(p / base**(2i/dim))."""
    if max_len <= 0 or dim <= 0:
        raise ValueError(f"sinusoidal_encoding: sizes must be positive, got max_len={max_len}, dim={dim}")
    ### BEGIN SOLUTION
    exponent = (np.arange(dim) // 2 * 2) / dim                      # 2i/d for columns 2i and 2i+1
    angles = np.arange(max_len, dtype=np.float64)[:, None] / base ** exponent[None, :]
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return Tensor(table, dtype=dtype)
    ### END SOLUTION


class SinusoidalPositionalEncoding(Module):
    "Fixed sinusoidal position vectors, with the same forward as PositionalEmbedding."
    def __init__(self, max_seq_len, embedding_dim, base=10000.0):
        super().__init__()
        self.max_seq_len, self.embedding_dim = max_seq_len, embedding_dim
        self.register_buffer("encoding", sinusoidal_encoding(max_seq_len, embedding_dim, base), persistent=False)

    def forward(self, seq_len_or_positions, offset=0):
        positions = _positions(seq_len_or_positions, offset, self.max_seq_len, type(self).__name__)
        return as_tensor(np.take(self.encoding.data, positions, axis=0))

    def extra_repr(self):
        return f"{self.max_seq_len}, {self.embedding_dim}"

# %%
def test_sinusoidal_encoding():
    pe = sinusoidal_encoding(50, 6).data
    assert pe.dtype == np.float32 and pe.shape == (50, 6)
    p, i = np.arange(50.0)[:, None], np.arange(3)[None, :]
    assert_close(pe[:, 0::2], np.sin(p / 10000 ** (2 * i / 6)), rtol=1e-6, atol=1e-7, name="even columns (sin)")
    assert_close(pe[:, 1::2], np.cos(p / 10000 ** (2 * i / 6)), rtol=1e-6, atol=1e-7, name="odd columns (cos)")
    assert np.array_equal(pe[0], [0, 1, 0, 1, 0, 1])
    # PE[p + k] is a rotation of PE[p] that depends on k only
    pe64, k = sinusoidal_encoding(50, 6, dtype=np.float64).data, 3
    w = 1 / 10000 ** (np.arange(0, 6, 2) / 6)
    for p in (0, 11, 40):
        s, c = pe64[p, 0::2], pe64[p, 1::2]
        assert np.allclose(pe64[p + k, 0::2], s * np.cos(k * w) + c * np.sin(k * w), atol=1e-12)
    enc = SinusoidalPositionalEncoding(50, 6)
    assert np.array_equal(enc(4, offset=2).data, pe[2:6]) and enc.state_dict() == {}
    with pytest.raises(ValueError, match="longer than the model's context of 50"):
        enc(51)

if __name__ == "__main__":
    run_tests("test_sinusoidal_encoding")

# %% [markdown]
# ## Rotary position embedding (RoPE)
#
# RoPE (Su et al., 2021) does not add anything to the token vectors. Inside attention it
# rotates every query and key vector by an angle proportional to the token's position.
# Split a vector of width $d$ into $d/2$ pairs; pair $i$ of the vector at position $p$ is
# rotated by $\theta_{p,i} = p\,\Theta^{-2i/d}$ (with $\Theta = 10000$):
#
# $$\begin{pmatrix} y_{2i} \\ y_{2i+1} \end{pmatrix} =
#   \begin{pmatrix} \cos\theta_{p,i} & -\sin\theta_{p,i} \\ \sin\theta_{p,i} & \cos\theta_{p,i} \end{pmatrix}
#   \begin{pmatrix} x_{2i} \\ x_{2i+1} \end{pmatrix}.$$
#
# The dot product of a query rotated by $p\,\omega$ and a key rotated by $s\,\omega$ only
# depends on $(p - s)\,\omega$, so attention scores see *relative* positions, while no
# vector's length changes.
#
# **Which elements form a pair.** We pair neighbours `(x[2i], x[2i+1])`: the *interleaved*
# convention of the RoFormer paper, Meta's original LLaMA code and Stanford's CS336. GPT-NeoX
# and Hugging Face's LLaMA pair the two halves, `(x[i], x[i + d/2])`, with the same
# frequencies ("rotate_half"). They are the same rotation in different coordinates: with the
# permutation `perm = [0, 2, 4, …, d-2, 1, 3, …, d-1]` that lists the first element of every
# pair and then the second,
#
# $$\operatorname{rope}_{\text{half}}(x[\text{perm}]) = \operatorname{rope}_{\text{interleaved}}(x)[\text{perm}].$$
#
# Because a dot product does not change when both vectors are permuted the same way,
# attention scores agree if the query and key projection rows of each head are permuted by
# `perm`; this is the permutation Hugging Face's LLaMA conversion script applies to `wq` and
# `wk`. `rope_half_split_permutation(d)` returns it.
#
# **As one op.** Forward rotates by $+\theta$; a rotation is orthogonal, so backward is
# the rotation by $-\theta$ applied to the output gradient. The cosines and sines are
# precomputed once for positions `0 … max_seq_len - 1` (in float64, stored as float32 buffers;
# float64 inputs use the float64 tables, so gradient checks stay exact). `token_positions`
# (integers of shape `(..., T)`, broadcastable against `x.shape[:-1]`) selects rows; without
# it, the positions are `0 … T-1`.

# %%
#| export
def rotate_pairs(x, cos, sin, inverse=False, out=None):
    """Rotate the interleaved pairs (x[..., 2i], x[..., 2i+1]) of the array x (..., d) by the angles whose
    cosines and sines, cos and sin (..., d/2), are given (by minus the angles if `inverse`).

    Returns `out` (a new array of x's shape and dtype unless given): out[..., 2i] = x0 cos - x1 sin and
    out[..., 2i+1] = x0 sin + x1 cos, with x0 = x[..., 0::2], x1 = x[..., 1::2]. `out` must not be x.
    """
    if inverse: sin = -sin
    if out is None: out = np.empty(x.shape, dtype=x.dtype)
    ### BEGIN SOLUTION
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    ### END SOLUTION
    return out


def apply_rotary(x, cos, sin):
    """RoPE as one op: a Tensor of x's shape and dtype, the interleaved pairs of x (..., T, d) rotated by the angles
    whose cos/sin arrays (..., T, d/2) are given (`rotate_pairs`). Record op "rope" with input x, saved (cos, sin)."""
    if x.shape[-1] % 2 or cos.shape[-1] * 2 != x.shape[-1]:
        raise ValueError(f"apply_rotary: x of shape {x.shape} needs an even last dimension and cos/sin with "
                         f"last dimension {x.shape[-1] // 2}; got cos of shape {cos.shape}")
    try:
        fits = np.broadcast_shapes(x.shape[:-1], cos.shape[:-1]) == x.shape[:-1]
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"apply_rotary: positions of shape {cos.shape[:-1]} do not broadcast to x's leading "
                         f"dimensions {x.shape[:-1]}")
    cos, sin = cos.astype(x.dtype, copy=False), sin.astype(x.dtype, copy=False)
    ### BEGIN SOLUTION
    return record("rope", rotate_pairs(x.data, cos, sin), (x,), (cos, sin))
    ### END SOLUTION


@derivative("rope")
def _rope_backward(g, cos, sin):
    "Gradient for x, as a 1-tuple: g (the output gradient, x's shape) rotated back by minus the angles."
    ### BEGIN SOLUTION
    return (rotate_pairs(g, cos, sin, inverse=True),)
    ### END SOLUTION


def rope_half_split_permutation(dim):
    "perm with rope_half(x[..., perm]) == rope_interleaved(x)[..., perm]: even indices, then odd ones."
    return np.concatenate([np.arange(0, dim, 2), np.arange(1, dim, 2)])


class RotaryEmbedding(Module):
    "RoPE over the last dimension `dim` (interleaved pairs), for positions 0 .. max_seq_len-1."
    def __init__(self, dim, theta=10000.0, max_seq_len=2048):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"RotaryEmbedding: dim must be a positive even number (it rotates pairs), got {dim}")
        if max_seq_len <= 0: raise ValueError(f"RotaryEmbedding: max_seq_len must be positive, got {max_seq_len}")
        self.dim, self.theta, self.max_seq_len = dim, float(theta), max_seq_len
        inv_freq = self.theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)          # (dim/2,)
        angles = np.arange(max_seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]    # (max_seq_len, dim/2)
        self._cos64, self._sin64 = np.cos(angles), np.sin(angles)
        self.register_buffer("cos", self._cos64.astype(np.float32), persistent=False)
        self.register_buffer("sin", self._sin64.astype(np.float32), persistent=False)

    def tables(self, seq_len, token_positions=None, dtype=np.float32):
        "cos, sin arrays of shape (T, dim/2) or token_positions.shape + (dim/2,) in the precision of `dtype`."
        cos, sin = (self._cos64, self._sin64) if np.dtype(dtype) == np.float64 else (self.cos.data, self.sin.data)
        if token_positions is None:
            if seq_len > self.max_seq_len:
                raise ValueError(f"RotaryEmbedding: sequence of {seq_len} tokens is longer than max_seq_len "
                                 f"{self.max_seq_len}")
            return cos[:seq_len], sin[:seq_len]
        pos = check_ids(token_positions, self.max_seq_len, "RotaryEmbedding", what="position", size_name="max_seq_len")
        return np.take(cos, pos, axis=0), np.take(sin, pos, axis=0)

    def forward(self, x, token_positions=None):
        """x (..., T, dim) with each position's pairs rotated (`apply_rotary`) by the angles of `self.tables`
        (positions 0 .. T-1, or `token_positions`), in x's precision; a Tensor of x's shape and dtype."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"RotaryEmbedding: expected last dimension {self.dim}, got input of shape {x.shape}")
        if x.ndim < 2: raise ValueError(f"RotaryEmbedding: expected input of shape (..., seq_len, {self.dim}), got {x.shape}")
        ### BEGIN SOLUTION
        cos, sin = self.tables(x.shape[-2], token_positions, x.dtype)
        return apply_rotary(x, cos, sin)
        ### END SOLUTION

    def extra_repr(self):
        return f"dim={self.dim}, theta={self.theta:g}, max_seq_len={self.max_seq_len}"

# %% [markdown]
# A straightforward reference for the tests below: the rotation written as 2 × 2 matrices,
# one pair at a time.

# %%
def _rope_reference(x, positions, theta=10000.0):
    d = x.shape[-1]
    out = np.empty_like(x)
    for i in range(d // 2):
        angle = positions[..., None] * theta ** (-2 * i / d)
        c, s = np.cos(angle)[..., 0], np.sin(angle)[..., 0]
        out[..., 2 * i] = c * x[..., 2 * i] - s * x[..., 2 * i + 1]
        out[..., 2 * i + 1] = s * x[..., 2 * i] + c * x[..., 2 * i + 1]
    return out

def _rope_half_split_reference(x, positions, theta=10000.0):
    d = x.shape[-1]
    angle = positions[..., None] * theta ** (-np.arange(0, d, 2) / d)
    c, s = np.concatenate([np.cos(angle)] * 2, -1), np.concatenate([np.sin(angle)] * 2, -1)
    rotate_half = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1)
    return x * c + rotate_half * s

def test_rotate_pairs_is_complex_multiplication():
    rng = np.random.default_rng(4)
    x, angle = rng.standard_normal((3, 8)), rng.uniform(-np.pi, np.pi, (3, 4))
    z = (x[:, 0::2] + 1j * x[:, 1::2]) * np.exp(1j * angle)         # a pair is a complex number, rotated by e^(i angle)
    y = rotate_pairs(x, np.cos(angle), np.sin(angle))
    assert np.allclose(y[:, 0::2], z.real, rtol=0, atol=1e-14) and np.allclose(y[:, 1::2], z.imag, rtol=0, atol=1e-14)
    assert np.allclose(rotate_pairs(y, np.cos(angle), np.sin(angle), inverse=True), x, rtol=0, atol=1e-14)

def test_rope_values_positions_and_dtype():
    rng = np.random.default_rng(0)
    rope = RotaryEmbedding(8, theta=100.0, max_seq_len=16)
    x = rng.standard_normal((2, 3, 5, 8))
    y = rope(Tensor(x, dtype=np.float64))
    assert_close(y, _rope_reference(x, np.arange(5.0), theta=100.0), rtol=0, atol=1e-14, inputs={"x": x})
    assert np.allclose(np.linalg.norm(y.data, axis=-1), np.linalg.norm(x, axis=-1))          # lengths unchanged
    pos = rng.integers(0, 16, (2, 1, 5))                                                    # per batch, shared by heads
    assert_close(rope(Tensor(x, dtype=np.float64), pos), _rope_reference(x, pos.astype(float), 100.0), rtol=0, atol=1e-14,
                 inputs={"token_positions": pos})
    y32 = rope(Tensor(x))
    assert y32.dtype == np.float32 and np.allclose(y32.data, y.data, atol=1e-5)

def test_rope_relative_scores():
    rng = np.random.default_rng(1)
    rope = RotaryEmbedding(6, max_seq_len=64)
    q, k = (Tensor(rng.standard_normal((1, 6)), dtype=np.float64) for _ in range(2))
    score = lambda p, s: (rope(q, np.array([p])).data @ rope(k, np.array([s])).data.T).item()
    assert np.isclose(score(10, 3), score(40, 33)) and np.isclose(score(0, 5), score(20, 25))

def test_rope_half_split_relation():
    rng = np.random.default_rng(2)
    x, positions = rng.standard_normal((3, 4, 10)), np.arange(4.0)
    perm = rope_half_split_permutation(10)
    assert perm.tolist() == [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]
    interleaved = _rope_reference(x, positions)
    assert np.allclose(_rope_half_split_reference(x[..., perm], positions), interleaved[..., perm], atol=1e-14)
    assert not np.allclose(_rope_half_split_reference(x, positions), interleaved)             # the conventions differ

def test_rope_gradient():
    rope = RotaryEmbedding(4, max_seq_len=8)
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3, 4)), dtype=np.float64)
    assert gradcheck(lambda x: rope(x), [x])
    assert gradcheck(lambda x: rope(x, np.array([[5, 1, 7]])), [x])

def test_rope_errors():
    rope = RotaryEmbedding(4, max_seq_len=8)
    with pytest.raises(ValueError, match="dim must be a positive even number"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match=r"expected last dimension 4, got input of shape \(3, 6\)"):
        rope(Tensor(np.ones((3, 6))))
    with pytest.raises(ValueError, match="sequence of 9 tokens is longer than max_seq_len 8"):
        rope(Tensor(np.ones((9, 4))))
    with pytest.raises(IndexError, match="position 8 is out of range for max_seq_len 8"):
        rope(Tensor(np.ones((2, 4))), np.array([0, 8]))
    with pytest.raises(TypeError, match="positions must be integers"):
        rope(Tensor(np.ones((2, 4))), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"positions of shape \(3,\) do not broadcast to x's leading dimensions \(2,\)"):
        rope(Tensor(np.ones((2, 4))), np.array([0, 1, 2]))

if __name__ == "__main__":
    run_tests("test_rope_*")

# %% [markdown]
# ## What the positions look like
#
# Left: the cosine similarity of the sinusoidal encodings of positions $p$ and $s$ depends,
# for the most part, on $|p - s|$ only: a band along the diagonal that fades with the
# distance. Right: one query and one key, rotated by RoPE to positions $p$ and $s$, score the
# same for every pair with the same offset $p - s$, so the score matrix is constant along
# every diagonal: attention sees relative positions only.

# %%
def _cosine_similarity_matrix(table):
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    return unit @ unit.T

if __name__ == "__main__":
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: skipping the plot")
    else:
        from tito.notebook import in_notebook
        if not in_notebook(): matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        try:
            _rope = RotaryEmbedding(64, max_seq_len=64)
            _q, _k = (Tensor(np.random.default_rng(i).standard_normal((1, 64)), dtype=np.float64) for i in (0, 1))
            _qs = np.concatenate([_rope(_q, np.array([p])).data for p in range(64)])
            _ks = np.concatenate([_rope(_k, np.array([p])).data for p in range(64)])
            for ax, m, title in ((axes[0], _cosine_similarity_matrix(sinusoidal_encoding(64, 64, dtype=np.float64).data),
                                  "sinusoidal: cosine similarity of positions"),
                                 (axes[1], _qs @ _ks.T, "RoPE: score of query at p, key at s")):
                im = ax.imshow(m, cmap="viridis")
                ax.set(title=title, xlabel="position s", ylabel="position p")
                fig.colorbar(im, ax=ax, shrink=0.8)
        except NotImplementedError as e:
            print("skipped until sinusoidal_encoding and RoPE are written:", e)
        fig.tight_layout()
        plt.show() if in_notebook() else plt.close(fig)

# %%
if __name__ == "__main__":
    manual_seed(0)
    tokens = Tensor([[3, 1, 4, 1, 5]])
    tok, pos = Embedding(10, 8), PositionalEmbedding(16, 8)
    try:
        print("token + position vectors:", (tok(tokens) + pos(tokens.shape[1])).shape)
        print("RoPE on (batch, heads, T, head_dim):", RotaryEmbedding(8)(Tensor(np.ones((1, 2, 5, 8)))).shape)
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Summary
#
# `embedding` gathers rows and scatter-adds their gradients; `Embedding` and
# `PositionalEmbedding` are trainable tables; `SinusoidalPositionalEncoding` is a fixed one;
# `RotaryEmbedding` rotates query and key pairs so attention scores depend on relative
# positions. Module 10 uses them in attention.
#
# ## Experiments to try
#
# 1. Compare `scatter_add_rows` with the textbook `np.add.at(grad, ids, rows)` on 768 ids x 128
#    dims from a 65-token vocabulary (`timeit`): the same sums, bit for bit, several times faster.
# 2. Change `base` in `sinusoidal_encoding(64, 64, base=...)` to 100 and to 1e6 and redraw the
#    similarity heatmap: a small base makes the band narrow (nearby positions look unrelated),
#    a large one wide (distant positions look alike).
# 3. Rotate the same query and key to positions (10, 3) and (1000, 993) with
#    `RotaryEmbedding(64, max_seq_len=2048)` in float64: the two scores agree to about 1e-12,
#    since only the offset matters.
