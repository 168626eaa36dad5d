"""Performance invariants that hold by construction, checked on a real GPT training step.

- No float64 anywhere in a float32 forward or backward: every recorded op's output, every
  array it saved for backward, and every gradient a derivative rule returns stay float32.
- No per-step allocation of optimizer state: AdamW's moment buffers are the same arrays on
  every step.
- `no_grad` generation and evaluation build no graph.
"""
import numpy as np
import pytest

import tinytorch
from tinytorch.core import tensor as T
from tinytorch.core.optimizers import AdamW, clip_grad_norm_, weight_decay_groups
from tinytorch.models.transformer import GPT
from tinytorch.parallel import DataParallel


def _model_and_batch(dropout=0.0):
    tinytorch.manual_seed(0)
    model = GPT(vocab_size=37, embed_dim=32, num_layers=2, num_heads=4, max_seq_len=16, dropout_prob=dropout)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 37, size=(3, 16))
    return model, x, np.roll(x, -1, axis=1)


def _arrays(values):
    for v in values:
        if isinstance(v, np.ndarray): yield v
        elif isinstance(v, (tuple, list)): yield from _arrays(v)


@pytest.fixture
def checked_rules(monkeypatch):
    "Wrap every derivative rule so that each gradient it returns is recorded with its op name."
    seen = []

    def wrap(op, rule):
        def checked(g, *saved):
            grads = rule(g, *saved)
            seen.extend((op, gi.dtype) for gi in grads if isinstance(gi, np.ndarray))
            return grads
        return checked
    for op, rule in list(T.DERIVATIVES.items()):
        monkeypatch.setitem(T.DERIVATIVES, op, wrap(op, rule))
    return seen


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_no_float64_in_a_float32_training_step(checked_rules, dropout):
    model, x, y = _model_and_batch(dropout)
    _, loss = model(x, targets=y)
    graph, stack, seen = [], [loss], set()
    while stack:                                   # every node of the recorded graph
        t = stack.pop()
        if id(t) in seen or t._node is None: continue
        seen.add(id(t))
        graph.append(t)
        stack.extend(t._node.inputs)
    assert len(graph) > 20
    for t in graph:
        assert t.dtype == np.float32, f"op {t._node.op} produced {t.dtype}"
        for a in _arrays(t._node.saved):
            assert a.dtype != np.float64, f"op {t._node.op} saved a float64 array of shape {a.shape}"
    loss.backward()
    assert checked_rules, "the wrapped rules were not called"
    wide = sorted({op for op, dtype in checked_rules if dtype == np.float64})
    assert not wide, f"derivative rules returned float64 gradients: {wide}"
    for name, p in model.named_parameters():
        assert p.grad.dtype == np.float32, name


def test_optimizer_state_is_allocated_once():
    model, x, y = _model_and_batch()
    opt = AdamW(weight_decay_groups(model.parameters(), 0.1), lr=1e-3)
    runner = DataParallel(model, threads=2)

    def step():
        opt.zero_grad()
        runner.forward_backward(x, y)
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    step()
    buffers = {id(p): (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for p in model.parameters()}
    data = {id(p): p.data for p in model.parameters()}
    for _ in range(3): step()
    for p in model.parameters():
        assert opt.state[p]["exp_avg"] is buffers[id(p)][0] and opt.state[p]["exp_avg_sq"] is buffers[id(p)][1]
        assert p.data is data[id(p)]                 # updated in place
        assert opt.state[p]["exp_avg"].dtype == np.float32


def test_generation_and_evaluation_build_no_graph():
    model, x, y = _model_and_batch()
    with tinytorch.no_grad():
        logits, loss = model(x, targets=y)
    assert logits._node is None and loss._node is None
    out = model.generate(x[:, :4], max_new_tokens=5, temperature=0)
    assert out._node is None and not out.requires_grad
