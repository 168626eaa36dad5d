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
# # 06 Losses
# > One number that says how wrong the model is: cross-entropy for classes and tokens, mean squared error for values.
#
# Training minimises a scalar loss. Two cover almost everything in this course:
#
# - **Cross-entropy** for classification. The model outputs one score (logit) per class; the
#   loss is the negative log-probability that softmax assigns to the correct class. A language
#   model is a classifier over the vocabulary at every position, so this is the GPT's loss.
# - **Mean squared error** for regression: the average of (prediction − target)².
#
# Both follow `torch.nn.functional`'s signatures and semantics (`reduction`, `ignore_index`,
# `label_smoothing`), with one deliberate difference: **the class axis is the last axis**.
# PyTorch's `cross_entropy` wants `(N, C, d1, ...)`; ours takes logits of shape `(..., C)`
# and integer targets of shape `(...)`, which is exactly what a language model produces:
# logits `(B, T, V)` and targets `(B, T)`. For 2-D input `(N, C)` the two agree.


# %% [markdown]
# **How to test and complete.** Every group of functions is followed by its tests. From the
# shell, `tito module test 6` runs this notebook's tests and `tito module complete 6`
# tests your notebook, exports it into the `tinytorch` package and runs the package tests.

# %%
#| default_exp core.losses

# %%
#| export
import warnings

import numpy as np
from tinytorch.core.tensor import Tensor, record, replaceable
from tinytorch.core.ops import where
from tinytorch.core.autograd import derivative
from tinytorch.core.activations import log_softmax

# %% [markdown]
# ## Cross-entropy
#
# For one row of logits x with correct class t, softmax gives pᶜ = eˣᶜ / Σⱼ eˣʲ, and
#
# $$\ell = -\log p_t = -\mathrm{log\_softmax}(x)_t,
#   \qquad \frac{\partial \ell}{\partial x_c} = p_c - [c = t].$$
#
# The gradient is "softmax minus one at the target": the cleanest gradient in deep learning.
# We write the loss as module 04's `log_softmax` (stable for logits of ±10⁴) followed by
# picking the target column of each row with fancy indexing, and autograd derives that
# gradient. Module 18 has a fused kernel for it, tested equal to this code: it never keeps
# the full (N, C) log-probabilities and computes the gradient above in one pass, where the
# composed form keeps them and scatters the picked gradients back with `np.add.at`.
#
# **Options, with PyTorch's semantics.**
#
# - `ignore_index` (default −100): rows whose target equals it contribute no loss and receive
#   zero gradient; padding tokens are marked this way. The ignore value may even be a valid
#   class id (then that class is never learned).
# - `reduction`: `'none'` returns one loss per row (shape of the targets), `'sum'` their sum,
#   `'mean'` their sum divided by the number of *non-ignored* rows. If every row is ignored,
#   the mean is 0/0 = NaN (as in PyTorch) and the gradient is zero; a `RuntimeWarning` says why,
#   so a NaN from an all-padding batch is not mistaken for a diverged model.
# - `label_smoothing` ε: the target distribution becomes q = (1 − ε)·onehot(t) + ε/C, so the
#   row loss is −Σ_c q_c log p_c = (1 − ε)(−log p_t) + ε·(−mean_c log p_c), and the gradient
#   is p − q. Ignored rows stay at zero, and the mean divides by the non-ignored count.
#
# **Loud errors.** Non-integer targets, a targets shape that is not the logits shape minus its
# last axis, and a target id outside [0, C) (other than `ignore_index`) each raise an error
# that names the problem. An out-of-range id would otherwise index a wrong row element or
# crash deep inside NumPy. `check_cross_entropy` does these checks (module 18's kernel calls
# it too) and returns the targets as one flat array of in-range ids, the mask of rows that
# count (None when all do) and their number.

# %%
#| export
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_label_smoothing(label_smoothing):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")


def _class_targets(targets, logits):
    "Targets as an int64 array of shape logits.shape[:-1], or a clear error."
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {t.dtype} "
                        f"(class-probability targets are not supported)")
    if t.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]} (classes on the last axis), got targets of shape {t.shape}")
    return t.astype(np.int64, copy=False)


def check_cross_entropy(logits, targets, ignore_index, reduction, label_smoothing):
    "Check cross_entropy's arguments; return (flat in-range targets, mask of counted rows or None, their number)."
    if not isinstance(logits, Tensor):
        raise TypeError(f"cross_entropy: logits must be a Tensor, got {type(logits).__name__}")
    if logits.ndim == 0 or logits.dtype.kind != "f":
        raise TypeError(f"cross_entropy: logits must be a floating-point tensor with a class axis, "
                        f"got dtype {logits.dtype} and shape {logits.shape}")
    _check_reduction(reduction, "cross_entropy")
    _check_label_smoothing(label_smoothing)
    t = _class_targets(targets, logits).reshape(-1)
    C = logits.shape[-1]
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= C))
    if bad.any():
        raise IndexError(f"cross_entropy: target id {int(t[bad][0])} is out of range for {C} classes "
                         f"(valid ids are 0 to {C - 1}; ignore_index={ignore_index} marks rows to skip)")
    if reduction == "mean" and not valid.any():
        warnings.warn(f"cross_entropy: no target to average ({'every target equals ignore_index=' + str(ignore_index) if t.size else 'the batch is empty'}), "
                      "so the mean loss is 0/0 = NaN, as in PyTorch", RuntimeWarning, stacklevel=4)
    if valid.all(): return t, None, t.size
    return np.where(valid, t, 0), valid, int(valid.sum())    # any in-range id; those rows are zeroed


@replaceable("cross_entropy")
def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits (..., C) against integer class ids (...).

    Per row: -log_softmax(x)[t], or with label smoothing eps (1 - eps) * that + eps * (-mean of
    log_softmax(x)); ignored rows give 0. Returns the per-row losses (shape of the targets) for
    'none', their sum for 'sum', their sum / number of counted rows for 'mean' (NaN if none).
    `t` are the flat target ids, `valid` the mask of counted rows (None: all count, else zero the
    others with `where`), `n_valid` their number."""
    t, valid, n_valid = check_cross_entropy(logits, targets, ignore_index, reduction, label_smoothing)
    ### BEGIN SOLUTION
    C = logits.shape[-1]
    logp = log_softmax(logits, axis=-1).reshape(-1, C)
    loss = -logp[np.arange(t.size), t]
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * logp.mean(axis=-1)
    if valid is not None: loss = where(valid, loss, 0.0)
    if reduction == "none": return loss.reshape(logits.shape[:-1])
    if reduction == "sum": return loss.sum()
    return loss.sum() / n_valid if n_valid else loss.sum() * np.nan
    ### END SOLUTION

# %% [markdown]
# The tests compare against a deliberately naive implementation in float64: full
# log-softmax, an explicit one-hot matrix, the smoothed target distribution written out.

# %%
import pytest
from tinytorch.core.autograd import gradcheck

def _naive_cross_entropy(x, t, ignore_index=-100, reduction="mean", eps=0.0):
    C = x.shape[-1]
    x2, t1 = x.reshape(-1, C), t.reshape(-1)
    logp = x2 - np.log(np.exp(x2).sum(axis=1, keepdims=True))
    valid = t1 != ignore_index
    q = np.zeros_like(x2)
    q[np.arange(len(t1))[valid], t1[valid]] = 1.0
    q = (1 - eps) * q + eps / C
    loss = -(q * logp).sum(axis=1) * valid
    if reduction == "none": return loss.reshape(t.shape)
    if reduction == "sum": return loss.sum()
    return loss.sum() / valid.sum()

def _case(seed=0, shape=(2, 3, 5), ignore=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    t = rng.integers(0, shape[-1], shape[:-1])
    if ignore: t.reshape(-1)[:ignore] = -100
    return x, t

def test_cross_entropy_matches_naive():
    for reduction in _REDUCTIONS:
        for eps in (0.0, 0.1):
            for ignore in (0, 2):
                x, t = _case(ignore=ignore)
                got = cross_entropy(Tensor(x, dtype=np.float64), t, reduction=reduction, label_smoothing=eps).data
                assert np.allclose(got, _naive_cross_entropy(x, t, -100, reduction, eps), rtol=1e-13, atol=1e-14)

def test_cross_entropy_gradcheck():
    x, t = _case(seed=1, ignore=2)
    for reduction in _REDUCTIONS:
        for eps in (0.0, 0.2):
            assert gradcheck(lambda a: cross_entropy(a, t, reduction=reduction, label_smoothing=eps),
                             [Tensor(x, dtype=np.float64)])

def test_cross_entropy_gradient_is_softmax_minus_onehot():
    x, t = _case(seed=2, shape=(4, 3))
    xt = Tensor(x, dtype=np.float64, requires_grad=True)
    cross_entropy(xt, t, reduction="sum").backward()
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert np.allclose(xt.grad.data, p - np.eye(3)[t], rtol=1e-14, atol=1e-15)

def test_cross_entropy_ignore_index_and_all_ignored():
    x, _ = _case(seed=3, shape=(4, 6))
    t = np.array([3, 1, 5, 0])                          # ignore_index may be a real class id
    got = cross_entropy(Tensor(x, dtype=np.float64), t, ignore_index=3).item()
    assert np.isclose(got, _naive_cross_entropy(x[1:], t[1:]), rtol=1e-14)
    xt = Tensor(x, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="every target equals ignore_index=-100"):
        loss = cross_entropy(xt, np.full(4, -100))
    assert np.isnan(loss.item())                        # 0 / 0, as in PyTorch
    loss.backward()
    assert np.array_equal(xt.grad.data, np.zeros((4, 6), dtype=np.float32))

def test_cross_entropy_is_stable_and_float32():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 5.0]], dtype=np.float32)
    xt = Tensor(x, requires_grad=True)
    loss = cross_entropy(xt, [1, 2], label_smoothing=0.1)
    assert loss.dtype == np.float32 and np.isfinite(loss.item())
    assert np.isclose(loss.item(), _naive_cross_entropy(x.astype(np.float64) - x.max(1, keepdims=True), np.array([1, 2]), eps=0.1), rtol=1e-6)
    loss.backward()
    assert xt.grad.dtype == np.float32 and np.all(np.isfinite(xt.grad.data))

def test_cross_entropy_errors():
    x = Tensor(np.zeros((2, 3, 5)))
    with pytest.raises(IndexError, match=r"target id 7 is out of range for 5 classes \(valid ids are 0 to 4"):
        cross_entropy(x, np.array([[0, 7, 1], [2, 3, 4]]))
    with pytest.raises(IndexError, match="target id -1 is out of range for 5 classes"):
        cross_entropy(x, np.array([[0, -1, 1], [2, 3, 4]]))
    cross_entropy(x, np.array([[0, 70, 1], [2, 3, 4]]), ignore_index=70)   # the ignore value is exempt
    with pytest.raises(TypeError, match="targets must be integer class ids, got dtype float64"):
        cross_entropy(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"logits of shape \(2, 3, 5\) need targets of shape \(2, 3\).*got targets of shape \(6,\)"):
        cross_entropy(x, np.zeros(6, dtype=np.int64))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        cross_entropy(x, np.zeros((2, 3), dtype=np.int64), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0, got 1.5"):
        cross_entropy(x, np.zeros((2, 3), dtype=np.int64), label_smoothing=1.5)
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        cross_entropy(Tensor([1, 2]), np.array(0))

# %% [markdown]
# ## Mean squared error
#
# ℓ = mean((input − target)²), with gradient 2(input − target)/n for the input and its
# negative for the target. Unlike PyTorch, which broadcasts mismatched shapes with only a
# warning (a `(N, 1)` prediction against an `(N,)` target silently becomes an `(N, N)` loss),
# we require equal shapes. A target that is not a Tensor is converted to the input's dtype;
# a target Tensor of another dtype is an error rather than a silent float64 computation.

# %%
#| export
def mse_loss(input, target, reduction="mean"):
    "Mean (or sum, or elementwise) squared difference between `input` and `target` of the same shape."
    if not isinstance(input, Tensor) or input.dtype.kind != "f":
        raise TypeError(f"mse_loss: input must be a floating-point Tensor, got "
                        f"{input.dtype if isinstance(input, Tensor) else type(input).__name__}")
    _check_reduction(reduction, "mse_loss")
    if not isinstance(target, Tensor): target = Tensor(np.asarray(target), dtype=input.dtype)
    if target.dtype != input.dtype:
        raise TypeError(f"mse_loss: input has dtype {input.dtype} but target has dtype {target.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"mse_loss: input of shape {input.shape} and target of shape {target.shape} differ; "
                         f"reshape one of them (mse_loss does not broadcast)")
    ### BEGIN SOLUTION
    diff = input.data - target.data
    sq = diff * diff
    if reduction == "none": out = sq
    elif reduction == "sum": out = np.asarray(sq.sum())
    else: out = np.asarray(sq.mean())
    return record("mse_loss", out, (input, target), (diff, reduction, target.requires_grad))
    ### END SOLUTION


@derivative("mse_loss")
def _mse_loss_backward(g, diff, reduction, target_needs_grad):
    "mse_loss saved diff = input - target: d/d input = 2·g·diff (divided by diff.size for 'mean'); the target gets the negative, or None."
    ### BEGIN SOLUTION
    scale = 2.0 * g / diff.size if reduction == "mean" else 2.0 * g
    gi = diff * scale
    return gi, (-gi if target_needs_grad else None)
    ### END SOLUTION

# %%
def test_mse_loss():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert np.isclose(mse_loss(Tensor(a, dtype=np.float64), b).item(), ((a - b) ** 2).mean(), rtol=1e-15)
    assert np.isclose(mse_loss(Tensor(a, dtype=np.float64), b, reduction="sum").item(), ((a - b) ** 2).sum(), rtol=1e-15)
    assert np.allclose(mse_loss(Tensor(a, dtype=np.float64), b, "none").data, (a - b) ** 2, rtol=1e-15)
    for reduction in _REDUCTIONS:
        assert gradcheck(lambda x, y: mse_loss(x, y, reduction), [Tensor(a, dtype=np.float64), Tensor(b, dtype=np.float64)])
    x = Tensor(a, requires_grad=True)
    loss = mse_loss(x, b)
    loss.backward()
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32

def test_mse_loss_errors():
    with pytest.raises(ValueError, match=r"input of shape \(3, 1\) and target of shape \(3,\) differ"):
        mse_loss(Tensor(np.zeros((3, 1))), np.zeros(3))
    with pytest.raises(TypeError, match="input has dtype float32 but target has dtype float64"):
        mse_loss(Tensor(np.zeros(3)), Tensor(np.zeros(3), dtype=np.float64))
    with pytest.raises(ValueError, match="mse_loss: reduction must be"):
        mse_loss(Tensor(np.zeros(3)), np.zeros(3), reduction="mean ")

# %% [markdown]
# ## Loss objects
#
# PyTorch users write `criterion = nn.CrossEntropyLoss(); loss = criterion(logits, targets)`.
# The loss objects hold the options (checked once, when created) and call the functions.

# %%
#| export
class CrossEntropyLoss:
    "Callable form of `cross_entropy`: `CrossEntropyLoss(ignore_index=-100)(logits, targets)`."
    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        _check_reduction(reduction, "CrossEntropyLoss")
        _check_label_smoothing(label_smoothing)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, logits, targets):
        return cross_entropy(logits, targets, self.ignore_index, self.reduction, self.label_smoothing)

    def __call__(self, logits, targets): return self.forward(logits, targets)
    def __repr__(self): return "CrossEntropyLoss()"


class MSELoss:
    "Callable form of `mse_loss`."
    def __init__(self, reduction="mean"):
        _check_reduction(reduction, "MSELoss")
        self.reduction = reduction

    def forward(self, input, target): return mse_loss(input, target, self.reduction)
    def __call__(self, input, target): return self.forward(input, target)
    def __repr__(self): return "MSELoss()"

# %%
def test_loss_objects():
    x, t = _case(seed=5, ignore=1)
    xt = Tensor(x, dtype=np.float64)
    crit = CrossEntropyLoss(reduction="sum", label_smoothing=0.05)
    assert crit(xt, t).item() == cross_entropy(xt, t, reduction="sum", label_smoothing=0.05).item()
    assert MSELoss(reduction="sum")(xt, x + 1).item() == pytest.approx(x.size)
    assert repr(crit) == "CrossEntropyLoss()" and repr(MSELoss()) == "MSELoss()"
    with pytest.raises(ValueError, match="CrossEntropyLoss: reduction must be"):
        CrossEntropyLoss(reduction="max")

# %%
if __name__ == "__main__":
    try:
        logits = Tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], requires_grad=True)
        loss = cross_entropy(logits, [0, 2])
        loss.backward()
        print("loss", loss.item(), "(uniform guess would be ln 3 =", np.log(3), ")")
        print("grad = (softmax - onehot) / N:\n", logits.grad)
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. Compute `cross_entropy` of all-zero logits over C classes: the loss is exactly log C, the
#    loss of a model that guesses uniformly (a freshly initialised GPT starts near log 65 = 4.17
#    on characters).
# 2. Raise `label_smoothing` from 0 to 0.3 on confident, correct logits: the loss grows, because
#    smoothing penalises putting all the probability on one class.
# 3. Mark half the targets with `ignore_index` and check that the mean loss equals the mean over
#    the other half alone.

# %% [markdown]
# ## Run this module's tests
#
# The cell below runs every test of this notebook in the kernel and prints PASS, FAIL (with
# the reason) or TODO per test; `tito module complete 6` runs them from the shell.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
