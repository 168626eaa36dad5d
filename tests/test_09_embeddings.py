"""Embeddings (module 09) against PyTorch in float64, plus formulas, gradcheck and errors."""
import math

import numpy as np
import pytest

from tinytorch.core.autograd import gradcheck
from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.embeddings import (Embedding, PositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding,
                                       TokenIdRangeError, apply_rotary, embedding, rope_half_split_permutation,
                                       sinusoidal_encoding)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) if np.size(a) else 0.0


# ------------------------------------------------------------------ Embedding --------------------------------------
@pytest.mark.parametrize("vocab,shape,dim", [(65, (12, 64), 16), (1000, (8, 256), 8), (5, (300,), 3),
                                             (50, (4, 7), 5), (7, (7,), 4)])
def test_embedding_values_and_grad_match_torch_exactly(vocab, shape, dim):
    rng = np.random.default_rng(vocab)
    w, ids, g = rng.standard_normal((vocab, dim)), rng.integers(0, vocab, shape), rng.standard_normal(shape + (dim,))
    if len(shape) == 1 and shape[0] == vocab: ids = rng.permutation(vocab)              # all ids distinct
    tw = torch.tensor(w, requires_grad=True)
    tout = F.embedding(torch.tensor(ids), tw)
    tout.backward(torch.tensor(g))
    ww = Tensor(w, dtype=np.float64, requires_grad=True)
    out = embedding(ids, ww)
    out.backward(g)
    assert _max_err(out.data, tout.detach().numpy()) == 0.0
    assert _max_err(ww.grad.data, tw.grad.numpy()) == 0.0          # same summation order: bit-identical


def test_embedding_repeated_ids_accumulate():
    ids = np.array([[3, 3, 3], [0, 3, 1]])
    w = Tensor(np.zeros((4, 2)), dtype=np.float64, requires_grad=True)
    embedding(Tensor(ids), w).backward(np.ones((2, 3, 2)))
    assert w.grad.data[:, 0].tolist() == [1.0, 1.0, 0.0, 4.0]


def test_embedding_layer_matches_torch_module_and_init():
    manual_seed(0)
    emb = Embedding(300, 64)
    assert emb.weight.dtype == np.float32 and emb.weight.shape == (300, 64)
    data = emb.weight.data.astype(np.float64)
    assert abs(data.mean()) < 0.02 and abs(data.std() - 1.0) < 0.02                        # N(0, 1), like torch
    t = torch.nn.Embedding(300, 64)
    t.weight.data = torch.tensor(emb.weight.data)
    ids = np.random.default_rng(1).integers(0, 300, (4, 9))
    out, tout = emb(ids), t(torch.tensor(ids))
    out.sum().backward(); tout.sum().backward()
    assert out.dtype == np.float32 and emb.weight.grad.dtype == np.float32
    assert _max_err(out.data, tout.detach().numpy()) == 0.0
    assert _max_err(emb.weight.grad.data, t.weight.grad.numpy()) == 0.0
    assert emb.state_dict().keys() == t.state_dict().keys()


def test_embedding_gradcheck():
    w = Tensor(np.random.default_rng(0).standard_normal((6, 3)), dtype=np.float64)
    ids = np.array([[0, 5, 5], [2, 0, 5]])
    assert gradcheck(lambda w: embedding(ids, w) * embedding(ids[::-1], w), [w])


def test_embedding_errors_name_the_id_and_vocab():
    emb = Embedding(10, 4)
    with pytest.raises(TokenIdRangeError, match=r"token id 12 is out of range for a vocabulary of size 10 \(valid: 0 to 9\)"):
        emb(np.array([[1, 12, 3]]))
    with pytest.raises(IndexError, match=r"token id -3 is out of range for a vocabulary of size 10"):
        emb(Tensor([-3, 2]))
    with pytest.raises(TypeError, match=r"token ids must be integers, got dtype float64"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"token ids must be integers, got dtype float32"):
        emb(Tensor([1.0]))
    with pytest.raises(ValueError, match="sizes must be positive"):
        Embedding(0, 4)


# ------------------------------------------------------------------ positions --------------------------------------
def test_positional_embedding_matches_torch():
    manual_seed(0)
    pos = PositionalEmbedding(32, 6).double()
    t = torch.nn.Embedding(32, 6).double()
    t.weight.data = torch.tensor(pos.weight.data)
    x = np.random.default_rng(0).standard_normal((3, 10, 6))
    ours = Tensor(x, dtype=np.float64) + pos(10, offset=4)
    theirs = torch.tensor(x) + t(torch.arange(4, 14))
    g = np.random.default_rng(1).standard_normal(x.shape)
    ours.backward(g); theirs.backward(torch.tensor(g))
    assert _max_err(ours.data, theirs.detach().numpy()) == 0.0
    assert _max_err(pos.weight.grad.data, t.weight.grad.numpy()) < 1e-14
    with pytest.raises(ValueError, match="a sequence of 33 tokens is longer than the model's context of 32"):
        pos(33)


def test_sinusoidal_matches_formula_and_the_classic_torch_code():
    max_len, d = 100, 16
    ours = sinusoidal_encoding(max_len, d, dtype=np.float64).data
    formula = np.array([[math.sin(p / 10000 ** (2 * (j // 2) / d)) if j % 2 == 0 else math.cos(p / 10000 ** (2 * (j // 2) / d))
                         for j in range(d)] for p in range(max_len)])
    assert _max_err(ours, formula) < 1e-12
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)          # the PyTorch tutorial's version
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
    pe = torch.zeros(max_len, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div_term), torch.cos(position * div_term)
    assert _max_err(ours, pe.numpy()) < 1e-12
    f32 = sinusoidal_encoding(max_len, d)
    assert f32.dtype == np.float32 and _max_err(f32.data, formula) < 1e-6
    enc = SinusoidalPositionalEncoding(max_len, d)
    assert enc(5, offset=3).dtype == np.float32 and _max_err(enc(5, offset=3).data, formula[3:8]) < 1e-6


# ------------------------------------------------------------------ RoPE -------------------------------------------
def _torch_rope_interleaved(x, positions, theta):
    """CS336 / Meta LLaMA style: rotate (x[2i], x[2i+1]) by positions * theta^(-2i/d), written plainly."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[..., None] * inv_freq                       # (..., T, d/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def _torch_rope_half_split(x, positions, theta):
    """GPT-NeoX / Hugging Face LLaMA style: pairs (x[i], x[i + d/2]), `rotate_half`."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[..., None] * inv_freq
    emb = torch.cat([angles, angles], dim=-1)
    rotate_half = torch.cat([-x[..., d // 2:], x[..., :d // 2]], dim=-1)
    return x * torch.cos(emb) + rotate_half * torch.sin(emb)


@pytest.mark.parametrize("theta,positions", [(10000.0, None), (500.0, "random")])
def test_rope_matches_torch_reference_values_and_grads(theta, positions):
    rng = np.random.default_rng(0)
    B, H, T, d = 2, 3, 11, 16
    rope = RotaryEmbedding(d, theta=theta, max_seq_len=64)
    x = rng.standard_normal((B, H, T, d))
    pos = np.arange(T) if positions is None else rng.integers(0, 64, (B, 1, T))
    xt = torch.tensor(x, requires_grad=True)
    ref = _torch_rope_interleaved(xt, torch.tensor(pos), theta)
    xx = Tensor(x, dtype=np.float64, requires_grad=True)
    out = rope(xx, None if positions is None else pos)
    g = rng.standard_normal(x.shape)
    ref.backward(torch.tensor(g)); out.backward(g)
    assert _max_err(out.data, ref.detach().numpy()) < 1e-13
    assert _max_err(xx.grad.data, xt.grad.numpy()) < 1e-13
    out32 = rope(Tensor(x), None if positions is None else pos)                  # float32 buffers, float32 result
    assert out32.dtype == np.float32 and _max_err(out32.data, ref.detach().numpy()) < 1e-5
    assert rope.cos.dtype == np.float32 and rope.cos.shape == (64, d // 2) and rope.state_dict() == {}


def test_rope_half_split_convention_is_a_permutation_of_ours():
    rng = np.random.default_rng(1)
    d, T = 12, 9
    rope = RotaryEmbedding(d, max_seq_len=T)
    perm = rope_half_split_permutation(d)
    x = rng.standard_normal((2, T, d))
    ours = rope(Tensor(x, dtype=np.float64)).data
    half = _torch_rope_half_split(torch.tensor(x[..., perm]), torch.arange(T), 10000.0).numpy()
    assert _max_err(half, ours[..., perm]) < 1e-13
    assert _max_err(_torch_rope_half_split(torch.tensor(x), torch.arange(T), 10000.0).numpy(), ours) > 1e-2
    # Attention scores agree when q and k are permuted the same way (how HF's LLaMA conversion permutes wq, wk rows).
    q, k = rng.standard_normal((T, d)), rng.standard_normal((T, d))
    ours_scores = rope(Tensor(q, dtype=np.float64)).data @ rope(Tensor(k, dtype=np.float64)).data.T
    qh = _torch_rope_half_split(torch.tensor(q[:, perm]), torch.arange(T), 10000.0)
    kh = _torch_rope_half_split(torch.tensor(k[:, perm]), torch.arange(T), 10000.0)
    assert _max_err(ours_scores, (qh @ kh.T).numpy()) < 1e-12


def test_rope_backward_is_rotation_by_minus_angle_and_gradcheck():
    rope = RotaryEmbedding(6, max_seq_len=10)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 5, 6)), dtype=np.float64, requires_grad=True)
    y = rope(x)
    g = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(g)
    cos, sin = rope.tables(5, dtype=np.float64)
    assert _max_err(x.grad.data, apply_rotary(Tensor(g, dtype=np.float64), cos, -sin).data) < 1e-14
    assert gradcheck(lambda x: rope(x, np.array([[9, 0, 3, 3, 1], [2, 2, 2, 2, 2]])), [x])


def test_rope_errors():
    rope = RotaryEmbedding(8, max_seq_len=16)
    with pytest.raises(ValueError, match="RotaryEmbedding: dim must be a positive even number"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than max_seq_len 16"):
        rope(Tensor(np.ones((17, 8))))
    with pytest.raises(TokenIdRangeError, match=r"position 16 is out of range for max_seq_len 16 \(valid: 0 to 15\)"):
        rope(Tensor(np.ones((2, 8))), np.array([3, 16]))
    with pytest.raises(TypeError, match="RotaryEmbedding: positions must be integers"):
        rope(Tensor(np.ones((2, 8))), np.array([0.5, 1.0]))
