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
# # 02 Autograd
# > Derivative rules for every op, and the engine that runs the chain rule backwards through a graph.
#
# In module 01 every op ended with `record(op, data, inputs, saved)`. When an input needs a
# gradient, that call leaves behind a `Node`, so a computation such as
# `loss = ((x @ w) * 2).sum()` leaves a graph: `loss ← sum ← mul_scalar ← matmul ← (x, w)`.
#
# Backpropagation is the chain rule applied to that graph in reverse. If `L` is the final
# scalar and `y = f(a, b)`, then
#
# $$\frac{\partial L}{\partial a} = \frac{\partial L}{\partial y}\,\frac{\partial y}{\partial a}$$
#
# so each op needs one *rule*: given the gradient arriving at its output (`g`, the same
# shape as the output), return the gradient for each input. This module writes those rules,
# one small function per op, registered in the `DERIVATIVES` table that the dispatcher
# reads, and the engine that calls them in the right order.

# %%
#| default_exp core.autograd

# %%
#| export
import functools
import numpy as np
from tinytorch.core.tensor import Tensor, DERIVATIVES, AUTOGRAD, grad_mode, _wrap, _power

# %% [markdown]
# ## Registering a rule
#
# A rule receives the output gradient `g` and the values its op saved, and returns one
# gradient per input (a tuple). Rules work on NumPy arrays: gradients are numbers, not
# new graphs. (Differentiating a backward pass again, "double backward", is out of scope.)
#
# Rules may return a gradient of the *broadcast* shape. When `a` of shape `(3,)` was added
# to `b` of shape `(2, 3)`, the gradient for `a` must be summed over the broadcast axis; the
# engine does that once, in `unbroadcast`, for every op, so no rule repeats it.

# %%
#| export
def derivative(op):
    "Register the decorated function as the derivative rule of `op`."
    def register(rule):
        DERIVATIVES[op] = rule
        return rule
    return register


def unbroadcast(g, shape):
    "Sum `g` over the axes that broadcasting added or stretched, giving it `shape`."
    ### BEGIN SOLUTION
    if g.shape == shape: return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes).reshape(shape)
    ### END SOLUTION

# %%
def test_unbroadcast():
    g = np.ones((4, 2, 3))
    assert unbroadcast(g, (3,)).tolist() == [8.0, 8.0, 8.0]
    assert unbroadcast(g, (2, 1)).tolist() == [[12.0], [12.0]]
    assert unbroadcast(g, ()).item() == 24.0 and unbroadcast(g, (4, 2, 3)) is g

# %% [markdown]
# ## Arithmetic
#
# | op | forward | gradient for each input |
# |---|---|---|
# | add | a + b | g, g |
# | sub | a − b | g, −g |
# | mul | a · b | g·b, g·a |
# | div | a / b | g / b, −g·a / b² |
# | pow | aⁿ | g·n·aⁿ⁻¹ (and g·aᵇ·ln a for a tensor exponent) |
#
# The `_scalar` variants have one tensor input: the constant needs no gradient.

# %%
#| export
@derivative("add")
def _add(g): 
    ### BEGIN SOLUTION
    return g, g
    ### END SOLUTION

@derivative("sub")
def _sub(g):
    ### BEGIN SOLUTION
    return g, -g
    ### END SOLUTION

@derivative("add_scalar")
def _add_scalar(g):
    ### BEGIN SOLUTION
    return (g,)
    ### END SOLUTION

@derivative("rsub_scalar")
def _rsub_scalar(g):
    ### BEGIN SOLUTION
    return (-g,)
    ### END SOLUTION

@derivative("neg")
def _neg(g):
    ### BEGIN SOLUTION
    return (-g,)
    ### END SOLUTION

@derivative("mul")
def _mul(g, a, b):
    ### BEGIN SOLUTION
    return g * b, g * a
    ### END SOLUTION

@derivative("mul_scalar")
def _mul_scalar(g, s):
    ### BEGIN SOLUTION
    return (g * s,)
    ### END SOLUTION

@derivative("div")
def _div(g, a, b):
    ### BEGIN SOLUTION
    gb = g / b
    return gb, -gb * a / b
    ### END SOLUTION

@derivative("div_scalar")
def _div_scalar(g, s):
    ### BEGIN SOLUTION
    return (g / s,)
    ### END SOLUTION

@derivative("rdiv_scalar")
def _rdiv_scalar(g, a, s):
    ### BEGIN SOLUTION
    return (-g * s / (a * a),)
    ### END SOLUTION

@derivative("pow_scalar")
def _pow_scalar(g, a, n):
    ### BEGIN SOLUTION
    if n == 0: return (np.zeros_like(g),)
    if n == 2: return (g * (a + a),)
    return (g * (n * _power(a, n - 1)),)
    ### END SOLUTION

@derivative("pow")
def _pow(g, a, b, out):
    ### BEGIN SOLUTION
    with np.errstate(divide="ignore", invalid="ignore"):
        ga = g * np.where(b == 0, 0.0, b * np.power(a, b - 1))
        gb = g * np.where((a == 0) & (b >= 0), 0.0, out * np.log(a))
    return ga, gb.astype(out.dtype, copy=False)
    ### END SOLUTION

@derivative("rpow_scalar")
def _rpow_scalar(g, out, log_base):
    ### BEGIN SOLUTION
    if log_base == -np.inf: return (g * np.where(np.isinf(out), -out, 0 * out),)    # base 0: PyTorch's limits
    return (g * out * log_base,)
    ### END SOLUTION

# %% [markdown]
# ## Elementwise functions
#
# Several rules reuse the forward *output* instead of the input, which saves recomputing:
# d/dx eˣ = eˣ, d/dx tanh x = 1 − tanh²x, d/dx σ(x) = σ(x)(1 − σ(x)), d/dx √x = 1 / (2√x).
# Where a function has a kink (relu at 0, abs at 0, maximum at a tie) we use PyTorch's
# convention so that gradients match it exactly: relu'(0) = 0, abs'(0) = 0, and a tie in
# `maximum`/`minimum` sends half the gradient to each side.

# %%
#| export
@derivative("exp")
def _exp(g, out):
    ### BEGIN SOLUTION
    return (g * out,)
    ### END SOLUTION

@derivative("log")
def _log(g, a):
    ### BEGIN SOLUTION
    return (g / a,)
    ### END SOLUTION

@derivative("sqrt")
def _sqrt(g, out):
    ### BEGIN SOLUTION
    return (g / (out + out),)
    ### END SOLUTION

@derivative("tanh")
def _tanh(g, out):
    ### BEGIN SOLUTION
    return (g * (1 - out * out),)
    ### END SOLUTION

@derivative("sigmoid")
def _sigmoid(g, out):
    ### BEGIN SOLUTION
    return (g * out * (1 - out),)
    ### END SOLUTION

@derivative("relu")
def _relu(g, a):
    ### BEGIN SOLUTION
    return (g * (a > 0),)
    ### END SOLUTION

@derivative("abs")
def _abs(g, a):
    ### BEGIN SOLUTION
    return (g * np.sign(a),)
    ### END SOLUTION

@derivative("maximum")
def _maximum(g, a, b):
    ### BEGIN SOLUTION
    tie = np.where(a == b, g * 0.5, 0)
    return np.where(a > b, g, tie), np.where(b > a, g, tie)
    ### END SOLUTION

@derivative("minimum")
def _minimum(g, a, b):
    ### BEGIN SOLUTION
    tie = np.where(a == b, g * 0.5, 0)
    return np.where(a < b, g, tie), np.where(b < a, g, tie)
    ### END SOLUTION

@derivative("clip")
def _clip(g, a, lo, hi):
    ### BEGIN SOLUTION
    inside = np.ones(a.shape, dtype=bool)
    if lo is not None: inside &= a >= lo
    if hi is not None: inside &= a <= hi
    return (g * inside,)
    ### END SOLUTION

# %% [markdown]
# ## Reductions
#
# A sum copies each output gradient back to every input element it summed; a mean does the
# same divided by the count. When the reduced axes were dropped (`keepdims=False`) we first
# put them back as size-1 axes so the gradient broadcasts against the input. `max`/`min`
# send the gradient to the elements equal to the result, shared evenly among ties (like
# `torch.amax`). For the variance with divisor d = n − correction,
# ∂var/∂xᵢ = 2 (xᵢ − x̄) / d.

# %%
#| export
def _restore_axes(g, axes, keepdims):
    return g if keepdims else np.expand_dims(g, axes)

@derivative("sum")
def _sum(g, shape, axes, keepdims):
    ### BEGIN SOLUTION
    return (np.broadcast_to(_restore_axes(g, axes, keepdims), shape),)
    ### END SOLUTION

@derivative("mean")
def _mean(g, shape, axes, keepdims):
    ### BEGIN SOLUTION
    count = int(np.prod([shape[i] for i in axes]))
    return (np.broadcast_to(_restore_axes(g, axes, keepdims) / count, shape),)
    ### END SOLUTION

@derivative("max")
@derivative("min")
def _extremum(g, a, out, axes, keepdims):
    ### BEGIN SOLUTION
    hit = a == out
    share = _restore_axes(g, axes, keepdims) / hit.sum(axis=axes, keepdims=True, dtype=g.dtype)
    return (hit * share,)
    ### END SOLUTION

@derivative("var")
def _var(g, centered, axes, keepdims, denom):
    ### BEGIN SOLUTION
    return (_restore_axes(g, axes, keepdims) * centered * (2.0 / denom),)
    ### END SOLUTION

# %% [markdown]
# ## Matrix multiplication
#
# For C = A B: ∂L/∂A = G Bᵀ and ∂L/∂B = Aᵀ G. Batched operands use the same formulas on
# their last two axes; a broadcast batch axis is summed by `unbroadcast`. A 1-D operand is
# first promoted to a matrix (a row on the left, a column on the right), exactly as the
# forward pass did, and the gradient is reshaped back at the end.

# %%
#| export
@derivative("matmul")
def _matmul(g, a, b):
    ### BEGIN SOLUTION
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if b.ndim == 1: g = g[..., None]            # put back the axes the forward pass removed
    if a.ndim == 1: g = g[..., None, :]
    ga = g @ np.swapaxes(b2, -1, -2)
    gb = np.swapaxes(a2, -1, -2) @ g
    return unbroadcast(ga, a2.shape).reshape(a.shape), unbroadcast(gb, b2.shape).reshape(b.shape)
    ### END SOLUTION

# %% [markdown]
# ## Shape ops, indexing and joining
#
# Shape ops move numbers without changing them, so their rules move the gradient back:
# reshape it to the input's shape, apply the inverse permutation, split what `cat` joined.
# Indexing scatters the gradient into a zero array of the input's shape. Basic indexing
# (ints, slices) touches each element at most once, so assignment is enough; an integer
# array may repeat an index (`x[[0, 0]]`), so the gradients must be *added*, which
# `np.add.at` does (a plain `+=` would keep only one of them).

# %%
#| export
@derivative("reshape")
def _reshape(g, shape):
    ### BEGIN SOLUTION
    return (g.reshape(shape),)
    ### END SOLUTION

@derivative("permute")
def _permute(g, dims):
    ### BEGIN SOLUTION
    return (g.transpose(sorted(range(len(dims)), key=dims.__getitem__)),)
    ### END SOLUTION

@derivative("transpose")
def _transpose(g, d0, d1):
    ### BEGIN SOLUTION
    return (g.swapaxes(d0, d1),)     # a swap is its own inverse
    ### END SOLUTION

@derivative("expand")
def _expand(g):
    ### BEGIN SOLUTION
    return (g,)      # the engine's unbroadcast sums over the expanded axes
    ### END SOLUTION

@derivative("getitem")
def _getitem(g, shape, idx, basic):
    ### BEGIN SOLUTION
    full = np.zeros(shape, dtype=g.dtype)
    if basic or (isinstance(idx, np.ndarray) and idx.dtype == np.bool_):
        full[idx] = g
    else:
        np.add.at(full, idx, g)
    return (full,)
    ### END SOLUTION

@derivative("cat")
def _cat(g, axis, sizes):
    ### BEGIN SOLUTION
    return tuple(np.split(g, np.cumsum(sizes)[:-1], axis=axis))
    ### END SOLUTION

@derivative("stack")
def _stack(g, axis):
    ### BEGIN SOLUTION
    return tuple(np.moveaxis(g, axis, 0))
    ### END SOLUTION

@derivative("where")
def _where(g, cond):
    ### BEGIN SOLUTION
    return np.where(cond, g, 0), np.where(cond, 0, g)
    ### END SOLUTION

@derivative("masked_fill")
def _masked_fill(g, mask):
    ### BEGIN SOLUTION
    return (np.where(mask, 0, g),)
    ### END SOLUTION

# %% [markdown]
# ## The engine
#
# Backward must visit a node only after every node that uses its output, so that its
# gradient is complete (a value used twice, as in `y = x * x + x`, receives two
# contributions that must be summed first). That order is a reverse *topological order*.
#
# We compute it with an explicit stack rather than recursion: a recursive depth-first
# search stops at Python's recursion limit (about a thousand frames), and a long chain of
# ops, such as a recurrent net unrolled over 100,000 steps, is deeper than that. Each node
# is pushed and popped a constant number of times, so the cost is linear in the graph size.
#
# Then, from the output back:
#
# 1. take the node's accumulated gradient `g`;
# 2. call its rule to get one gradient per input;
# 3. `unbroadcast` each to its input's shape and dtype (a float32 input gets a float32 gradient);
# 4. for a leaf, add it into `leaf.grad` (so gradients also accumulate across `backward`
#    calls until you zero them); for an intermediate tensor, add it into the pending gradient.
#
# Finally the graph is freed: each node drops its inputs and saved arrays, releasing the
# activations' memory. A second backward through the same graph then raises an error,
# unless the first one passed `retain_graph=True`.

# %%
#| export
_FREED = ("Trying to backward through the graph a second time: its saved values were freed by the first "
          "backward. Pass retain_graph=True to the first backward() if you need to call it again.")


def _topological_order(root):
    "Tensors with a recorded op, each after every tensor it depends on (iterative DFS)."
    ### BEGIN SOLUTION
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen: continue
        seen.add(id(t))
        inputs = t._node.inputs
        if inputs is None: raise RuntimeError(_FREED)
        stack.append((t, True))
        for inp in inputs:
            if inp._node is not None and id(inp) not in seen:
                stack.append((inp, False))
    return order
    ### END SOLUTION


def _accumulate_leaf(leaf, g):
    if leaf.grad is None:
        leaf.grad = _wrap(np.array(g, dtype=leaf.data.dtype, copy=True))   # own the memory
    else:
        leaf.grad.data += g


def _seed_gradient(root, gradient):
    if gradient is None:
        if root.data.size != 1:
            raise RuntimeError(f"backward() without a gradient needs a scalar output; this tensor has shape "
                               f"{root.shape}. Reduce it first (e.g. .sum()) or pass gradient= of that shape.")
        return np.ones_like(root.data)
    g = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=root.data.dtype)
    if g.shape != root.shape:
        raise ValueError(f"backward(): gradient has shape {g.shape} but the output has shape {root.shape}")
    return g


def _backprop(root, seed, retain_graph, wanted=None):
    "Run the chain rule from `root`. Leaves accumulate into `.grad`, or into a dict when `wanted` is given."
    ### BEGIN SOLUTION
    found = {}
    if root._node is None:                     # backward on a leaf: its gradient is the seed
        if wanted is None: _accumulate_leaf(root, seed)
        else: found[id(root)] = seed
        return found
    pending = {id(root): seed}
    for t in reversed(_topological_order(root)):
        g = pending.pop(id(t), None)
        if g is None: continue
        if wanted is not None and id(t) in wanted: found[id(t)] = g
        node = t._node
        for inp, gi in zip(node.inputs, node.rule(g, *node.saved)):
            if gi is None or not inp._requires_grad: continue
            if gi.shape != inp.data.shape: gi = unbroadcast(gi, inp.data.shape)
            if gi.dtype != inp.data.dtype: gi = gi.astype(inp.data.dtype)
            if inp._node is None:
                if wanted is None: _accumulate_leaf(inp, gi)
                elif id(inp) in wanted: found[id(inp)] = found[id(inp)] + gi if id(inp) in found else gi
            else:
                k = id(inp)
                pending[k] = pending[k] + gi if k in pending else gi
        if not retain_graph:
            node.inputs = node.saved = None
    return found
    ### END SOLUTION


def backward(tensor, gradient=None, retain_graph=False):
    "Accumulate d(tensor)/d(leaf) into every leaf's `.grad` (what `tensor.backward()` calls)."
    if not tensor._requires_grad:
        raise RuntimeError("backward(): this tensor does not require grad and has no graph; "
                           "did you forget requires_grad=True, or compute it under no_grad()?")
    _backprop(tensor, _seed_gradient(tensor, gradient), retain_graph)


def grad(output, inputs, gradient=None, retain_graph=False):
    "Gradients of `output` with respect to `inputs`, returned instead of stored in `.grad`."
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if not output._requires_grad:
        raise RuntimeError("grad(): the output does not require grad and has no graph")
    found = _backprop(output, _seed_gradient(output, gradient), retain_graph, {id(t) for t in inputs})
    grads = [None if id(t) not in found else _wrap(np.asarray(found[id(t)], dtype=t.dtype)) for t in inputs]
    return grads[0] if single else grads


AUTOGRAD.backward = backward

# %% [markdown]
# ## Turning the recorder off
#
# During evaluation and generation nobody will call backward, so recording the graph only
# costs time and keeps activations alive. `no_grad()` switches recording off for the
# current thread, as a context manager or a decorator; `enable_grad()` switches it back on
# inside a `no_grad` region.

# %%
#| export
class _GradModeContext:
    "Set grad mode on enter, restore it on exit; also usable as a decorator."
    mode = True

    def __enter__(self):
        self._previous = grad_mode.enabled
        grad_mode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        grad_mode.enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradModeContext):
    "Record nothing: outputs have no graph and keep no reference to their inputs."
    mode = False


class enable_grad(_GradModeContext):
    "Record again inside a `no_grad` region."
    mode = True


class set_grad_enabled(_GradModeContext):
    "`set_grad_enabled(False)` switches recording off at once; as a context manager it restores on exit."
    def __init__(self, mode):
        self.mode, self._previous = bool(mode), grad_mode.enabled
        grad_mode.enabled = self.mode

    def __enter__(self): return self


def is_grad_enabled():
    return grad_mode.enabled

# %% [markdown]
# ## Checking gradients numerically
#
# A rule can be wrong in ways no shape check catches. The independent test is the
# definition of the derivative: perturb one input element by ±ε and watch the output,
#
# $$\frac{\partial L}{\partial x_i} \approx \frac{L(x + \varepsilon e_i) - L(x - \varepsilon e_i)}{2\varepsilon}.$$
#
# The central difference has error O(ε²), and in float64 ε = 1e-6 leaves about 1e-10 of
# rounding error, so agreement to ~1e-6 is a strong check. For a non-scalar output we check
# the scalar L = Σ vᵢ yᵢ with a fixed random v, which exercises every output element.

# %%
#| export
class GradcheckError(AssertionError):
    "Raised by `gradcheck` when analytic and numerical gradients disagree."


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    "Compare the engine's gradients of `fn(*inputs)` with central finite differences in float64."
    inputs = [Tensor(t, dtype=np.float64, requires_grad=True) if isinstance(t, Tensor) and t.dtype.kind == "f"
              else t for t in inputs]
    out = fn(*inputs)
    v = np.random.default_rng(seed).standard_normal(out.shape)
    targets = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    analytic = grad(out, targets, gradient=v)

    def objective():
        with no_grad():
            return float(np.sum(fn(*inputs).data * v))

    worst = (-np.inf, None)
    for k, t in enumerate(targets):
        a = np.zeros(t.shape) if analytic[k] is None else analytic[k].data
        flat = t.data.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + eps; up = objective()
            flat[i] = orig - eps; down = objective()
            flat[i] = orig
            numeric = (up - down) / (2 * eps)
            idx = np.unravel_index(i, t.shape)
            excess = np.abs(a[idx] - numeric) - (atol + rtol * np.abs(numeric))
            if np.isnan(excess): excess = np.inf          # a NaN on either side is a mismatch
            if excess > worst[0]: worst = (excess, (k, idx, a[idx], numeric))
    if worst[1] is not None and worst[0] > 0:
        k, idx, an, nu = worst[1]
        msg = (f"gradcheck failed for input {k} at index {tuple(int(i) for i in idx)}: analytic {an:.10g}, "
               f"numeric {nu:.10g}, |difference| {abs(an - nu):.3g} > atol + rtol*|numeric| = {atol + rtol * abs(nu):.3g}")
        if raise_exception: raise GradcheckError(msg)
        return False
    return True

# %% [markdown]
# ## Tests
#
# Every rule is checked against finite differences here; `tests/test_02_autograd.py`
# checks each against PyTorch in float64 as well.

# %%
import pytest
from tinytorch.core import tensor as T

def _r(*shape, positive=False, seed=0):
    x = np.random.default_rng(seed + len(shape)).standard_normal(shape)
    return Tensor(np.abs(x) + 0.5 if positive else x, dtype=np.float64)

GRADCHECK_CASES = {
    "add": (lambda a, b: a + b, [_r(2, 3), _r(3)]),
    "sub": (lambda a, b: a - b, [_r(4, 1, 3), _r(2, 1)]),
    "mul": (lambda a, b: a * b, [_r(2, 3), _r(2, 1)]),
    "div": (lambda a, b: a / b, [_r(2, 3), _r(3, positive=True)]),
    "scalars": (lambda a: (2.0 - a) * 3.0 / 4.0 + 1.0 - (1.5 / (a * a + 1.0)), [_r(3)]),
    "neg": (lambda a: -a, [_r(3)]),
    "pow_scalar": (lambda a: a ** 3 + a ** 2 + a ** 0.5 + a ** -1 + a ** 1.7, [_r(3, positive=True)]),
    "pow": (lambda a, b: a ** b, [_r(2, 3, positive=True), _r(3)]),
    "rpow": (lambda a: 2.0 ** a, [_r(3)]),
    "exp_log_sqrt": (lambda a: T.exp(a) + T.log(a) + T.sqrt(a), [_r(2, 3, positive=True)]),
    "tanh_sigmoid": (lambda a: T.tanh(a) * T.sigmoid(a), [_r(2, 3)]),
    "relu_abs": (lambda a: T.relu(a) + T.abs(a), [_r(2, 3)]),
    "maximum_minimum": (lambda a, b: T.maximum(a, b) + 2 * T.minimum(a, b), [_r(2, 3), _r(3, seed=5)]),
    "clip": (lambda a: T.clip(a, -0.5, 0.5), [_r(4, 3)]),
    "sum": (lambda a: a.sum(axis=(0, 2)) + a.sum(dim=1, keepdim=True).sum(), [_r(2, 3, 4)]),
    "mean": (lambda a: a.mean(axis=1) * a.mean(), [_r(2, 3, 4)]),
    "max_min": (lambda a: a.max(axis=1) + a.min(axis=(0, 2), keepdims=True).sum(), [_r(2, 3, 4)]),
    "var": (lambda a: a.var(axis=-1) + a.var(correction=0), [_r(2, 3, 4)]),
    "matmul": (lambda a, b: a @ b, [_r(2, 1, 3, 4), _r(5, 4, 2)]),
    "matmul_vec": (lambda a, b, c: (a @ b) @ c, [_r(4), _r(4, 3), _r(3)]),
    "shapes": (lambda a: a.reshape(4, 6).T.unsqueeze(0).squeeze(0).transpose(0, 1).flatten().reshape(2, 3, 4)
               .permute(2, 0, 1), [_r(2, 3, 4)]),
    "expand": (lambda a: a.expand(2, 3, 4), [_r(3, 1)]),
    "getitem": (lambda a: a[0, 1:] + a[..., None][1, 1:, :, 0] + a[[0, 0, 1], [1, 1, 2]].sum(), [_r(2, 3, 4)]),
    "getitem_mask": (lambda a: a[a.data > 0], [_r(3, 4)]),
    "cat_stack_split": (lambda a, b: T.cat([a, b], axis=1) * T.stack(T.split(T.cat([a, b], axis=1), 2, dim=1), 0).sum(0).sum(),
                        [_r(2, 2), _r(2, 2, seed=3)]),
    "where_masked_fill": (lambda a, b: T.where(a.data > 0, a, b) + T.masked_fill(a, a.data < 0, 0.0), [_r(2, 3), _r(3)]),
}

@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_every_op(name):
    fn, inputs = GRADCHECK_CASES[name]
    assert gradcheck(fn, inputs)

def test_gradcheck_catches_a_wrong_rule():
    saved = DERIVATIVES["tanh"]
    try:
        DERIVATIVES["tanh"] = lambda g, out: (g * (1 - out),)       # a plausible mistake
        with pytest.raises(GradcheckError, match="gradcheck failed for input 0 at index"):
            gradcheck(T.tanh, [_r(3)])
    finally:
        DERIVATIVES["tanh"] = saved

def test_diamond_and_repeated_use_accumulate():
    x = Tensor([2.0, -3.0], requires_grad=True)
    y = x * x + x            # dy/dx = 2x + 1
    z = y * 3 + y.exp()      # diamond: y feeds two branches
    z.sum().backward()
    expected = (3 + np.exp(x.data ** 2 + x.data)) * (2 * x.data + 1)
    assert np.allclose(x.grad.data, expected)

def test_leaf_gradients_accumulate_across_calls():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    assert np.array_equal(w.grad.data, [6.0, 6.0])
    a, b = Tensor([1.0], requires_grad=True), Tensor([1.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data *= 2                                              # grads never alias each other
    assert b.grad.item() == 1.0

def test_long_chain_is_iterative_and_linear():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()                                            # no RecursionError
    assert x.grad.item() == 1.0

def test_broadcast_inputs_get_their_own_shape_and_dtype():
    a = Tensor(np.ones(3), requires_grad=True)                   # float32
    b = Tensor(np.ones((2, 3)), dtype=np.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3,) and a.grad.dtype == np.float32 and np.array_equal(a.grad.data, [2, 2, 2])
    assert b.grad.shape == (2, 3) and b.grad.dtype == np.float64

def test_float32_stays_float32():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    y = ((x @ w).tanh() * 0.5 + 1.0) ** 2 / 3.0
    assert y.dtype == np.float32
    y.mean().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32

def test_graph_is_freed_and_retain_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()                                                  # allowed once more
    assert np.array_equal(x.grad.data, [4.0, 8.0])
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()

def test_backward_errors():
    with pytest.raises(RuntimeError, match=r"needs a scalar output; this tensor has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\) but the output has shape \(2,\)"):
        (Tensor([1.0, 2.0], requires_grad=True) * 2).backward(np.ones(3))

def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not is_grad_enabled()
        with enable_grad():
            z = x * 2
    assert y._node is None and not y.requires_grad and z._node is not None and is_grad_enabled()

    @no_grad()
    def f(t): return t * 3
    assert f(x)._node is None and is_grad_enabled()
    with set_grad_enabled(False):
        assert (x * 1)._node is None
    assert is_grad_enabled()

def test_grad_returns_without_touching_dot_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    gx = grad((x * x).sum(), x)
    assert np.array_equal(gx.data, [2.0, 4.0]) and x.grad is None

# %%
if __name__ == "__main__":
    x = Tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    loss = (x.tanh() * x).sum()
    loss.backward()
    print("loss", loss, "\ngrad", x.grad)
    print("gradcheck:", gradcheck(lambda t: (t.tanh() * t).sum(), [x]))
