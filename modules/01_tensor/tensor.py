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
# # 01 Tensor
# > The n-dimensional array every other module is built on, and the one dispatcher every op goes through.
#
# A deep-learning framework is two things: an array library and a way to differentiate
# programs written with it. This module builds the first half. A `Tensor` wraps a NumPy
# array; every op computes its result with NumPy and hands it to one small function,
# `record`, which decides whether the op must be remembered for the backward pass. Module 02
# writes the derivative of each op and the engine that walks the recorded graph.
#
# Design choices, each for a reason:
#
# - **float32 by default.** It is what models train in, and it halves memory traffic. Ask for
#   `dtype=np.float64` when you want it (gradient checks do).
# - **Python numbers stay weak.** `x * 0.5` on a float32 tensor stays float32 (NumPy 2's
#   promotion rules), so a stray scalar never turns a model into float64.
# - **One dispatcher, one table.** `record(op, data, inputs, saved)` looks up the op's
#   derivative rule in `DERIVATIVES`, which module 02 fills, the way PyTorch's
#   `derivatives.yaml` pairs each op with its gradient formula. This module never imports
#   module 02, so dependencies point one way only.
#
# **How to test.** You write the ops. Each docstring says what to compute and what to
# `record` (the op name and the saved values module 02 needs). In Jupyter, the `run_tests`
# cell after each group prints PASS, FAIL (with the reason) or TODO per test. From the shell,
# `tito module test 1` runs the notebook's tests, and `tito module complete 1` exports your
# code into `tinytorch` and runs `tests/test_01_tensor.py` (forward values against PyTorch).

# %%
#| default_exp core.tensor

# %%
#| export
import builtins
import threading
import numpy as np

# %% [markdown]
# ## The data model
#
# A tensor is a NumPy array (`data`) plus what autograd needs: whether it `requires_grad`,
# its accumulated gradient `grad` (a Tensor or `None`), and `_node`, the record of the op
# that produced it (`None` for tensors you create yourself: the *leaves* of a graph).
#
# The class uses `__slots__`: every op creates a tensor, so a tensor must be cheap to make.
# Only floating-point tensors can require gradients; integer tensors hold indices and labels.

# %%
#| export
DEFAULT_DTYPE = np.dtype(np.float32)

def _as_array(data, dtype=None):
    "Convert `data` to a NumPy array: floats become float32 unless `dtype` says otherwise."
    if isinstance(data, Tensor):
        data = data.data
        if dtype is None: dtype = data.dtype
    arr = np.array(data, dtype=dtype)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"Tensor data must be numeric (bool, int or float); got dtype {arr.dtype}")
    if dtype is None and arr.dtype.kind == "f" and arr.dtype != DEFAULT_DTYPE:
        arr = arr.astype(DEFAULT_DTYPE)
    return arr

class Tensor:
    "An n-dimensional array that can record the operations applied to it."
    __slots__ = ("data", "grad", "_requires_grad", "_node", "__weakref__")
    __array_ufunc__ = None     # NumPy defers to our operators: `np.float32(2) * t` is a Tensor

    def __init__(self, data, dtype=None, requires_grad=False):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._node = None
        self._requires_grad = False
        if requires_grad: self.requires_grad = True

    @property
    def requires_grad(self): return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients; this tensor has dtype {self.data.dtype}")
        self._requires_grad = bool(flag)

    def requires_grad_(self, flag=True):
        "Set `requires_grad` in place and return self (PyTorch's spelling)."
        self.requires_grad = flag
        return self

    @property
    def shape(self): return self.data.shape
    @property
    def ndim(self): return self.data.ndim
    @property
    def dtype(self): return self.data.dtype
    @property
    def size(self): return self.data.size
    @property
    def is_leaf(self): return self._node is None
    @property
    def grad_fn(self): return None if self._node is None else self._node.op

    def numel(self): return self.data.size
    def dim(self): return self.data.ndim
    def __len__(self): return len(self.data)
    def numpy(self): return self.data
    def tolist(self): return self.data.tolist()
    def __array__(self, dtype=None, copy=None):
        if copy: return np.array(self.data, dtype=dtype)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element; this one has shape {self.shape}")
        return self.data.item()

    def detach(self):
        "A new leaf tensor sharing this tensor's data, cut off from the graph."
        return _wrap(self.data)

    def astype(self, dtype):
        "A copy converted to `dtype`, cut off from the graph (like `tensor.to(dtype).detach()`)."
        return _wrap(self.data.astype(dtype))

    def float(self): return self.astype(np.float32)
    def double(self): return self.astype(np.float64)
    def long(self): return self.astype(np.int64)

    def backward(self, gradient=None, retain_graph=False):
        "Backpropagate from this tensor; the engine lives in `tinytorch.core.autograd`."
        if AUTOGRAD.backward is None:
            raise RuntimeError("backward() needs the autograd engine: import tinytorch (or tinytorch.core.autograd)")
        AUTOGRAD.backward(self, gradient, retain_graph)

    __hash__ = object.__hash__    # we define ==, which would otherwise make tensors unhashable
    def __bool__(self): return bool(self.data)    # one element only, as in PyTorch (not len() != 0)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", precision=4, prefix="tensor(")
        extra = "" if self.data.dtype == DEFAULT_DTYPE else f", dtype={self.data.dtype}"
        if self._node is not None: extra += f", grad_fn=<{self._node.op}>"
        elif self._requires_grad: extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

def _wrap(data):
    "Fast path: a leaf Tensor around an existing array (no copy, no conversion)."
    t = Tensor.__new__(Tensor)
    t.data = data if type(data) is np.ndarray else np.asarray(data)    # ufuncs give NumPy scalars for 0-d
    t.grad, t._node, t._requires_grad = None, None, False
    return t

# %% [markdown]
# ## The dispatcher
#
# Every differentiable op ends the same way: it has computed `data` with NumPy and now calls
#
# ```python
# record(op, data, inputs, saved)
# ```
#
# If gradients are enabled and any input requires a gradient, the output remembers a
# `Node`: the op's name, its derivative rule from `DERIVATIVES[op]`, the input tensors, and
# `saved`, the values the rule will need. Otherwise the output is a plain leaf and nothing is
# kept alive: this is what makes `no_grad` inference cheap.
#
# **The contract with module 02.** Module 02's rule for an op receives exactly the saved
# values, in order: the rule for `"mul"` is `rule(g, a, b)`, so `mul` must save
# `(a.data, b.data)`; `sub(x, 2.0)` records `"add_scalar"`, because subtracting a constant has
# the derivative of adding one. Each op's docstring states its op name and saved values, and
# each group's `test_*_records` test checks them with `check_record` below, so a wrong
# contract fails here, not in module 02.
#
# Whether gradients are enabled is per thread (`threading.local`), as in PyTorch: a thread
# that evaluates under `no_grad` never switches recording off for a thread that trains.

# %%
#| export
class _GradMode(threading.local):
    enabled = True

grad_mode = _GradMode()

class _Autograd:
    "Hooks filled in by `tinytorch.core.autograd`: the derivative table and the engine."
    backward = None

AUTOGRAD = _Autograd()
DERIVATIVES = {}    # op name -> rule(grad, *saved) returning one gradient per input

class Node:
    "How a tensor was made: op name, derivative rule, input tensors, values saved for backward."
    __slots__ = ("op", "rule", "inputs", "saved")

    def __init__(self, op, rule, inputs, saved):
        self.op, self.rule, self.inputs, self.saved = op, rule, inputs, saved

def record(op, data, inputs, saved=()):
    "Wrap `data` as the output of `op`; remember the op if any input needs a gradient."
    out = Tensor.__new__(Tensor)
    out.data = data if type(data) is np.ndarray else np.asarray(data)    # ufuncs give NumPy scalars for 0-d
    out.grad, out._node, out._requires_grad = None, None, False
    if grad_mode.enabled:
        for t in inputs:
            if t._requires_grad:
                rule = DERIVATIVES.get(op)
                if rule is None:
                    raise RuntimeError(f"op '{op}' has no derivative rule; import tinytorch.core.autograd")
                out._requires_grad = True
                out._node = Node(op, rule, inputs, saved)
                break
    return out

# %%
import contextlib
import pytest
from tito.notebook import run_tests

def _stand_in_rule(g, *saved):
    raise AssertionError("a stand-in derivative rule: module 02 writes the real ones")

class _AnyRule(dict):
    def get(self, op, default=None): return super().get(op) or _stand_in_rule

@contextlib.contextmanager
def stand_in_rules():
    "Let `record` keep a node for any op name before module 02 has filled `DERIVATIVES`."
    g = record.__globals__
    real = g["DERIVATIVES"]
    g["DERIVATIVES"] = _AnyRule(real)
    try: yield
    finally: g["DERIVATIVES"] = real

def _same(x, y):
    if isinstance(x, Tensor): return False                 # save arrays, not tensors
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype.kind != y.dtype.kind: return False
        return np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True) if y.dtype.kind == "f" else np.array_equal(x, y)
    if isinstance(y, (tuple, list)):
        return isinstance(x, (tuple, list)) and len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    return x == y

def _leaf(x):
    return Tensor(x, dtype=np.float64, requires_grad=True)

def check_record(out, op, inputs, expected, /, **saved):
    """`out` must be what `record(op, data, inputs, saved)` returned: that op name, the input tensors themselves,
    data equal to `expected`, and the saved values named as module 02's rule for `op` names them."""
    assert isinstance(out, Tensor), f"{op}: returned a {type(out).__name__}; return the Tensor that record() makes"
    node = out._node
    assert node is not None, f"{op}: nothing was recorded; return record({op!r}, data, inputs, saved)"
    assert node.op == op, f"recorded op {node.op!r}, expected {op!r}"
    assert len(node.inputs) == len(inputs) and all(x is y for x, y in zip(node.inputs, inputs)), \
        f"{op}: inputs must be the {len(inputs)} operand tensor(s) themselves; got {len(node.inputs)} other object(s)"
    assert _same(out.data, np.asarray(expected)), f"{op}: data {out.data} differs from the expected {expected}"
    want = f"({', '.join(saved)})" if saved else "nothing"
    assert isinstance(node.saved, (tuple, list)) and len(node.saved) == len(saved), \
        f"{op}: saved {node.saved!r}; module 02's rule needs {want}"
    for k, (name, value) in enumerate(saved.items()):
        assert _same(node.saved[k], value), f"{op}: saved value {k} ({name}) is {node.saved[k]!r}, expected {value!r}"

def test_record_keeps_a_node_only_when_an_input_requires_grad():
    a, b = Tensor([1.0]), _leaf([2.0])
    assert record("anything", a.data * 2, (a,), (a.data,))._node is None
    with stand_in_rules():
        check_record(record("mul", a.data * b.data, (a, b), (a.data, b.data)), "mul", (a, b), [2.0], a=[1.0], b=[2.0])

# %% [markdown]
# ## Textbook code and fast kernels
#
# What you write in this course is the textbook form of each idea, and autograd derives its
# backward pass. Module 17 gives the hottest functions (LayerNorm, GELU, softmax,
# cross-entropy, attention) *fused kernels*, tested equal to the textbook versions. Marking a
# package function `@replaceable("name")` lets one explicit `register_kernel("name", kernel)`
# run a kernel in its place (`None` removes it; `f.textbook` is the textbook version). A
# function a notebook defines always runs as written, so your tests always test your code.

# %%
#| export
KERNELS = {}    # name -> fast kernel registered for the replaceable textbook function of that name

def register_kernel(name, kernel):
    "Run `kernel` instead of the replaceable textbook function `name` (None: back to the textbook version)."
    if kernel is None: KERNELS.pop(name, None)
    else: KERNELS[name] = kernel

def replaceable(name):
    "Decorator: a textbook function that a kernel registered under `name` replaces (package functions only)."
    def wrap(textbook):
        if not textbook.__module__.startswith("tinytorch."):
            return textbook                   # a notebook's own definition: always the code as written
        def dispatch(*args, **kwargs):
            kernel = KERNELS.get(name)
            return textbook(*args, **kwargs) if kernel is None else kernel(*args, **kwargs)
        dispatch.__name__, dispatch.__qualname__, dispatch.__doc__ = textbook.__name__, textbook.__qualname__, textbook.__doc__
        dispatch.__module__, dispatch.__wrapped__, dispatch.textbook = textbook.__module__, textbook, textbook
        return dispatch
    return wrap

# %% [markdown]
# ## Creating tensors and randomness
#
# The helpers mirror PyTorch's. All randomness draws from one NumPy `Generator`, so
# `manual_seed(s)` makes initialisation, dropout and sampling reproducible. The generator is
# the `generator` attribute of one *random source* object, and `get_rng()` is the only way
# code reaches it. `set_random_source(source)` is the documented hook for where it lives:
# module 18 installs a source with one generator per worker thread, so that threads drawing
# dropout masks at the same time stay reproducible.

# %%
#| export
class RandomSource:
    "Where tinytorch's generator lives: one `generator` attribute, shared by the whole process."
    def __init__(self, generator=None):
        self.generator = np.random.default_rng() if generator is None else generator

_source = RandomSource()

def random_source():
    "The object whose `generator` attribute `get_rng` returns and `manual_seed` replaces."
    return _source

def set_random_source(source):
    "Keep tinytorch's generator in `source.generator` from now on; returns the previous source."
    global _source
    previous, _source = _source, source
    return previous

def manual_seed(seed):
    "Seed every random draw in tinytorch (initialisation, dropout, sampling)."
    _source.generator = np.random.default_rng(seed)

def get_rng():
    "The generator behind tinytorch's randomness."
    return _source.generator

def _shape(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)

def tensor(data, dtype=None, requires_grad=False):
    "Create a tensor from a list, array, number or tensor (a copy)."
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)

def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad=False):
    return Tensor(np.zeros(_shape(shape), dtype=dtype), dtype=dtype, requires_grad=requires_grad)

def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad=False):
    return Tensor(np.ones(_shape(shape), dtype=dtype), dtype=dtype, requires_grad=requires_grad)

def full(shape, fill_value, dtype=DEFAULT_DTYPE, requires_grad=False):
    return Tensor(np.full(_shape((shape,)), fill_value, dtype=dtype), dtype=dtype, requires_grad=requires_grad)

def randn(*shape, dtype=DEFAULT_DTYPE, requires_grad=False):
    "Standard normal samples."
    data = get_rng().standard_normal(_shape(shape), dtype=np.dtype(dtype).type)
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)

def rand(*shape, dtype=DEFAULT_DTYPE, requires_grad=False):
    "Uniform samples in [0, 1)."
    data = get_rng().random(_shape(shape), dtype=np.dtype(dtype).type)
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)

def arange(start, stop=None, step=1, dtype=None):
    "Like `torch.arange`: integers stay int64, a float bound gives float32."
    data = np.arange(start, stop, step) if stop is not None else np.arange(start)
    return Tensor(data, dtype=dtype or (np.int64 if data.dtype.kind in "iu" else DEFAULT_DTYPE))

def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)

def ones_like(t, dtype=None, requires_grad=False):
    return ones(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)

def randn_like(t, dtype=None, requires_grad=False):
    return randn(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)

# %% [markdown]
# ## Elementwise arithmetic and broadcasting
#
# Binary ops follow NumPy's broadcasting rules: align shapes from the right; each pair of
# dimensions must be equal or one of them 1. `(4, 1, 3) + (5, 1)` gives `(4, 5, 3)`. Shapes
# that do not broadcast raise a `ValueError` that names the op and both shapes.
#
# A Python number on either side is not turned into a tensor: `x * 0.5` records the
# one-input op `mul_scalar`, whose backward has nothing to compute for the constant.

# %%
#| export
def _broadcast_error(op, a, b):
    return ValueError(f"{op}: shapes {tuple(np.shape(a))} and {tuple(np.shape(b))} cannot be broadcast together")

def _binary(op, fn, a, b):
    "Apply NumPy's `fn` to two tensors, naming the op if their shapes do not broadcast."
    try:
        return fn(a.data, b.data)
    except ValueError:
        raise _broadcast_error(op, a.data, b.data) from None

def _is_scalar(x):
    return isinstance(x, (int, float, bool, np.number))

def _py(x):
    "A NumPy scalar as a Python number: NumPy 2 lets Python numbers (not NumPy's) adapt to the array's dtype."
    return x.item() if isinstance(x, np.generic) else x

def _tensor_operand(x):
    if isinstance(x, Tensor): return x
    if isinstance(x, np.ndarray): return Tensor(x, dtype=x.dtype)
    raise TypeError(f"unsupported operand of type {type(x).__name__}; expected a Tensor or a number")

def add(a, b):
    """`a + b`, broadcast. A number `b` (after `_py`): `record("add_scalar", a.data + b, (a,))`.
    Otherwise `b = _tensor_operand(b)` and `record("add", _binary("add", np.add, a, b), (a, b))`. Nothing saved."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("add_scalar", a.data + b, (a,))
    b = _tensor_operand(b)
    return record("add", _binary("add", np.add, a, b), (a, b))
    ### END SOLUTION

def sub(a, b):
    """`a - b`. A number `b`: `record("add_scalar", a.data - b, (a,))` (subtracting a constant has the
    derivative of adding one). A tensor: `record("sub", _binary("sub", np.subtract, a, b), (a, b))`. Nothing saved."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("add_scalar", a.data - b, (a,))
    b = _tensor_operand(b)
    return record("sub", _binary("sub", np.subtract, a, b), (a, b))
    ### END SOLUTION

def rsub(a, b):
    """`b - a` (`2.0 - x`). A number `b`: `record("rsub_scalar", b - a.data, (a,))`; a tensor: `sub(b, a)`."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("rsub_scalar", b - a.data, (a,))
    return sub(_tensor_operand(b), a)
    ### END SOLUTION

def mul(a, b):
    """`a * b`. A number `b`: `record("mul_scalar", data, (a,), (b,))`.
    A tensor: `record("mul", data, (a, b), (a.data, b.data))`: the rule needs both factors."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("mul_scalar", a.data * b, (a,), (b,))
    b = _tensor_operand(b)
    return record("mul", _binary("mul", np.multiply, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def div(a, b):
    """`a / b`. A number `b`: `record("div_scalar", data, (a,), (b,))`.
    A tensor: `record("div", data, (a, b), (a.data, b.data))`."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("div_scalar", a.data / b, (a,), (b,))
    b = _tensor_operand(b)
    return record("div", _binary("div", np.divide, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def rdiv(a, b):
    """`b / a` (`1.0 / x`). A number `b`: `record("rdiv_scalar", b / a.data, (a,), (a.data, b))`; a tensor: `div(b, a)`."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("rdiv_scalar", b / a.data, (a,), (a.data, b))
    return div(_tensor_operand(b), a)
    ### END SOLUTION

def neg(a):
    """`-a`: `record("neg", -a.data, (a,))`. Nothing saved."""
    ### BEGIN SOLUTION
    return record("neg", -a.data, (a,))
    ### END SOLUTION

def _power(x, n):
    "x ** n with small integer exponents as products: `x ** 3` on float32 is ~60x slower than `x*x*x`."
    if n == 2: return x * x
    if n == 3: return x * x * x
    if n == 1: return x.copy()
    if n == 0.5: return np.sqrt(x)
    if n == -1: return 1.0 / x
    return np.power(x, n)

def pow(a, b):
    """`a ** b`. A number `b`: `record("pow_scalar", _power(a.data, b), (a,), (a.data, b))`. A tensor:
    `out = _binary("pow", np.power, a, b)`, `record("pow", out, (a, b), (a.data, b.data, out))`."""
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("pow_scalar", _power(a.data, b), (a,), (a.data, b))
    b = _tensor_operand(b)
    out = _binary("pow", np.power, a, b)
    return record("pow", out, (a, b), (a.data, b.data, out))
    ### END SOLUTION

def rpow(a, b):
    """`b ** a` for a number `b` (`2.0 ** x`): `out = np.power(b, a.data)`, then
    `record("rpow_scalar", out, (a,), (out, log_base))` with `log_base = float(np.log(b))` (-inf for b = 0)."""
    ### BEGIN SOLUTION
    b = _py(b)
    out = np.power(b, a.data)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_base = float(np.log(b))
    return record("rpow_scalar", out, (a,), (out, log_base))
    ### END SOLUTION

# %%
def test_arithmetic_records():
    a, b = _leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), _leaf([0.5, 2.0, 4.0])
    A, B = a.data, b.data
    with stand_in_rules():
        check_record(add(a, b), "add", (a, b), A + B)
        check_record(add(a, 2.0), "add_scalar", (a,), A + 2)
        check_record(sub(a, b), "sub", (a, b), A - B)
        check_record(sub(a, 2.0), "add_scalar", (a,), A - 2)
        check_record(rsub(a, 2.0), "rsub_scalar", (a,), 2 - A)
        check_record(neg(a), "neg", (a,), -A)
        check_record(mul(a, b), "mul", (a, b), A * B, a=A, b=B)
        check_record(mul(a, 3.0), "mul_scalar", (a,), A * 3, s=3.0)
        check_record(div(a, b), "div", (a, b), A / B, a=A, b=B)
        check_record(div(a, 4.0), "div_scalar", (a,), A / 4, s=4.0)
        check_record(rdiv(a, 2.0), "rdiv_scalar", (a,), 2 / A, a=A, s=2.0)
        for n in (2, 3, 0.5, -1, 1.5):
            check_record(pow(a, n), "pow_scalar", (a,), A ** n, a=A, n=n)
        check_record(pow(a, b), "pow", (a, b), A ** B, a=A, b=B, out=A ** B)
        check_record(rpow(a, 2.0), "rpow_scalar", (a,), 2 ** A, out=2 ** A, log_base=np.log(2.0))
    assert mul(Tensor([1.0, 2.0]), 0.5).dtype == np.float32     # a Python float does not promote to float64

def test_broadcast_error_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        mul(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))

# %%
run_tests("test_arithmetic_records", "test_broadcast_error_names_op_and_shapes")

# %% [markdown]
# ## Elementwise functions
#
# `exp log sqrt tanh sigmoid relu abs`, and the two-input `maximum`/`minimum` and `clip`.
# The sigmoid is computed as `0.5 * (1 + tanh(x / 2))`, which is exact algebra and never
# overflows, unlike `1 / (1 + exp(-x))` for large negative `x`.

# %%
#| export
def exp(a):
    """`e ** a`, same shape and dtype: `record("exp", out, (a,), (out,))` (d/dx eˣ = eˣ reuses the output)."""
    ### BEGIN SOLUTION
    out = np.exp(a.data)
    return record("exp", out, (a,), (out,))
    ### END SOLUTION

def log(a):
    """Natural logarithm: `record("log", out, (a,), (a.data,))`."""
    ### BEGIN SOLUTION
    return record("log", np.log(a.data), (a,), (a.data,))
    ### END SOLUTION

def sqrt(a):
    """Square root: `record("sqrt", out, (a,), (out,))`."""
    ### BEGIN SOLUTION
    out = np.sqrt(a.data)
    return record("sqrt", out, (a,), (out,))
    ### END SOLUTION

def tanh(a):
    """Hyperbolic tangent: `record("tanh", out, (a,), (out,))`."""
    ### BEGIN SOLUTION
    out = np.tanh(a.data)
    return record("tanh", out, (a,), (out,))
    ### END SOLUTION

def sigmoid(a):
    """`1 / (1 + e^-a)` computed as `0.5 * (1 + tanh(a / 2))`, which never overflows:
    `record("sigmoid", out, (a,), (out,))`."""
    ### BEGIN SOLUTION
    out = np.tanh(a.data * 0.5)
    out += 1.0
    out *= 0.5
    return record("sigmoid", out, (a,), (out,))
    ### END SOLUTION

def relu(a):
    """`max(a, 0)`: `record("relu", out, (a,), (a.data,))`."""
    ### BEGIN SOLUTION
    return record("relu", np.maximum(a.data, 0), (a,), (a.data,))
    ### END SOLUTION

def abs(a):
    """`|a|`: `record("abs", out, (a,), (a.data,))`."""
    ### BEGIN SOLUTION
    return record("abs", np.abs(a.data), (a,), (a.data,))
    ### END SOLUTION

def maximum(a, b):
    """Elementwise maximum, broadcast (either side may be an array: `_tensor_operand`, `_binary`):
    `record("maximum", out, (a, b), (a.data, b.data))`. Module 02 splits the gradient at ties, like PyTorch."""
    ### BEGIN SOLUTION
    a, b = _tensor_operand(a), _tensor_operand(b)
    return record("maximum", _binary("maximum", np.maximum, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def minimum(a, b):
    """Elementwise minimum: `record("minimum", out, (a, b), (a.data, b.data))`, as `maximum`."""
    ### BEGIN SOLUTION
    a, b = _tensor_operand(a), _tensor_operand(b)
    return record("minimum", _binary("minimum", np.minimum, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def clip(a, min=None, max=None):
    """Clamp to [min, max] (PyTorch's `clamp`; one bound may be None, not both: ValueError
    "clip: give at least one of min and max"): `record("clip", out, (a,), (a.data, min, max))`."""
    ### BEGIN SOLUTION
    if min is None and max is None: raise ValueError("clip: give at least one of min and max")
    min, max = _py(min), _py(max)
    return record("clip", np.clip(a.data, min, max), (a,), (a.data, min, max))
    ### END SOLUTION

# %%
def test_elementwise_records():
    x, y, p = _leaf([-3.0, -0.5, 0.25, 2.0]), _leaf([1.0, -0.5, 0.0, 3.0]), _leaf([0.25, 4.0])
    X, Y, P = x.data, y.data, p.data
    with stand_in_rules():
        check_record(exp(x), "exp", (x,), np.exp(X), out=np.exp(X))
        check_record(log(p), "log", (p,), np.log(P), a=P)
        check_record(sqrt(p), "sqrt", (p,), np.sqrt(P), out=np.sqrt(P))
        check_record(tanh(x), "tanh", (x,), np.tanh(X), out=np.tanh(X))
        check_record(sigmoid(x), "sigmoid", (x,), 1 / (1 + np.exp(-X)), out=1 / (1 + np.exp(-X)))
        check_record(relu(x), "relu", (x,), np.maximum(X, 0), a=X)
        check_record(abs(x), "abs", (x,), np.abs(X), a=X)
        check_record(maximum(x, y), "maximum", (x, y), np.maximum(X, Y), a=X, b=Y)
        check_record(minimum(x, y), "minimum", (x, y), np.minimum(X, Y), a=X, b=Y)
        check_record(clip(x, -1.0, 1.0), "clip", (x,), np.clip(X, -1, 1), a=X, lo=-1.0, hi=1.0)
        check_record(clip(x, min=0.0), "clip", (x,), np.maximum(X, 0), a=X, lo=0.0, hi=None)
    with np.errstate(over="raise"):                             # 1 / (1 + exp(800)) would overflow
        assert np.array_equal(sigmoid(Tensor([-800.0, 800.0])).data, [0.0, 1.0])

# %%
run_tests("test_elementwise_records")

# %% [markdown]
# ## Reductions
#
# `sum mean max min var` reduce over `axis` (an int, a tuple, or `None` for all axes) and
# drop the reduced axes unless `keepdims=True`. PyTorch users can write `dim=`/`keepdim=`
# instead. `var` follows PyTorch: the unbiased estimate (`correction=1`) unless told
# otherwise; LayerNorm uses `correction=0`.

# %%
#| export
def _axis(ndim, axis, dim):
    "Normalise axis/dim to a sorted tuple of non-negative axes (None = all)."
    if dim is not None:
        if axis is not None: raise TypeError("give either axis= or dim=, not both")
        axis = dim
    if axis is None: return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < builtins.max(ndim, 1):
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % builtins.max(ndim, 1))
    return tuple(sorted(set(out)))

def _keep(keepdims, keepdim):
    return keepdims or bool(keepdim)

def sum(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Sum over `axis` (int, tuple, None = all; `dim`/`keepdim` are PyTorch's names). With
    `axes = _axis(a.ndim, axis, dim)` (a sorted tuple) and `keep = _keep(keepdims, keepdim)` (a bool):
    `record("sum", out, (a,), (a.shape, axes, keep))`."""
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    return record("sum", a.data.sum(axis=axes, keepdims=keep), (a,), (a.shape, axes, keep))
    ### END SOLUTION

def mean(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Mean, the same arguments as `sum`: `record("mean", out, (a,), (a.shape, axes, keep))`."""
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    count = 1
    for ax in axes: count *= a.shape[ax]
    out = a.data.sum(axis=axes, keepdims=keep) / count      # np.mean does the same with more Python overhead
    return record("mean", out, (a,), (a.shape, axes, keep))
    ### END SOLUTION

def max(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Largest value (like `torch.amax`), arguments as `sum`: `record("max", out, (a,), (a.data, kept, axes, keep))`
    where `kept` is the result with keepdims=True (the rule compares it with `a.data`; ties share the gradient)."""
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    out = a.data.max(axis=axes, keepdims=True)
    return record("max", out if keep else out.reshape(np.delete(a.shape, axes)), (a,), (a.data, out, axes, keep))
    ### END SOLUTION

def min(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    """Smallest value (like `torch.amin`): `record("min", out, (a,), (a.data, kept, axes, keep))`, as `max`."""
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    out = a.data.min(axis=axes, keepdims=True)
    return record("min", out if keep else out.reshape(np.delete(a.shape, axes)), (a,), (a.data, out, axes, keep))
    ### END SOLUTION

def var(a, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None, unbiased=None):
    """Variance dividing by n - correction (PyTorch's default correction=1; `unbiased=False` means 0). With
    `centered = a.data - mean over axes (keepdims)`: `record("var", out, (a,), (centered, axes, keep, n - correction))`."""
    ### BEGIN SOLUTION
    if unbiased is not None: correction = int(unbiased)
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    n = int(np.prod([a.shape[i] for i in axes]))
    centered = a.data - a.data.mean(axis=axes, keepdims=True)
    out = np.sum(centered * centered, axis=axes, keepdims=keep) / (n - correction)
    return record("var", out, (a,), (centered, axes, keep, n - correction))
    ### END SOLUTION

# %%
def test_reduction_records():
    x = _leaf(np.arange(24.0).reshape(2, 3, 4) % 7)
    X = x.data
    c = X - X.mean(axis=2, keepdims=True)
    with stand_in_rules():
        check_record(sum(x), "sum", (x,), X.sum(), shape=X.shape, axes=(0, 1, 2), keepdims=False)
        check_record(sum(x, dim=-1, keepdim=True), "sum", (x,), X.sum(2, keepdims=True), shape=X.shape, axes=(2,),
                     keepdims=True)
        check_record(mean(x, axis=(2, 0)), "mean", (x,), X.mean((0, 2)), shape=X.shape, axes=(0, 2), keepdims=False)
        check_record(max(x, axis=1), "max", (x,), X.max(1), a=X, out=X.max(1, keepdims=True), axes=(1,), keepdims=False)
        check_record(min(x, axis=(0, 1), keepdims=True), "min", (x,), X.min((0, 1), keepdims=True), a=X,
                     out=X.min((0, 1), keepdims=True), axes=(0, 1), keepdims=True)
        check_record(var(x, axis=-1), "var", (x,), X.var(2, ddof=1), centered=c, axes=(2,), keepdims=False, denom=3)
        check_record(var(x, axis=2, correction=0), "var", (x,), X.var(2), centered=c, axes=(2,), keepdims=False, denom=4)

def test_reduction_axis_errors():
    with pytest.raises(ValueError, match="axis 3 is out of range for a tensor with 2 dimensions"):
        sum(Tensor(np.ones((2, 2))), axis=3)
    with pytest.raises(TypeError, match="either axis= or dim="):
        sum(Tensor(np.ones(2)), axis=0, dim=0)

# %%
run_tests("test_reduction_records", "test_reduction_axis_errors")

# %% [markdown]
# ## Matrix multiplication
#
# `a @ b` follows NumPy's rules: 2-D times 2-D is a matrix product, leading dimensions
# broadcast as a batch, and a 1-D operand is treated as a row (left) or a column (right)
# vector whose added dimension is removed from the result. A mismatched inner dimension
# raises a `ValueError` naming both shapes.

# %%
#| export
def matmul(a, b):
    """`a @ b` by NumPy's rules (a batch broadcasts; a 1-D operand is a row on the left, a column on the right).
    A mismatch raises ValueError "matmul: shapes ... do not match (...)". `record("matmul", out, (a, b), (a.data, b.data))`."""
    ### BEGIN SOLUTION
    b = _tensor_operand(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension; got shapes {a.shape} and {b.shape}")
    try:
        out = np.matmul(a.data, b.data)
    except ValueError:
        k = b.shape[-2] if b.ndim > 1 else b.shape[0]
        why = (f"inner dimensions {a.shape[-1]} and {k}" if a.shape[-1] != k else
               f"batch dimensions {a.shape[:-2]} and {b.shape[:-2]} cannot be broadcast together")
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match ({why})") from None
    return record("matmul", out, (a, b), (a.data, b.data))
    ### END SOLUTION

# %%
def test_matmul_records():
    rng = np.random.default_rng(0)
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = _leaf(rng.standard_normal(sa)), _leaf(rng.standard_normal(sb))
        with stand_in_rules():
            check_record(matmul(a, b), "matmul", (a, b), a.data @ b.data, a=a.data, b=b.data)

def test_matmul_errors():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 6\) do not match"):
        matmul(Tensor(np.ones((3, 4))), Tensor(np.ones((5, 6))))

# %%
run_tests("test_matmul_records", "test_matmul_errors")

# %% [markdown]
# ## Shape operations
#
# Reshaping never moves data in NumPy; it only changes how the same numbers are indexed.
# `view`, `squeeze`, `unsqueeze` and `flatten` are all reshapes, so they share one op and
# one derivative rule (reshape the gradient back). `transpose(d0, d1)` swaps two axes
# (PyTorch's meaning); `permute` reorders all of them; `.T` reverses them. `expand` and
# `broadcast_to` repeat size-1 axes without copying.

# %%
#| export
def reshape(a, *shape):
    """The same numbers in a new shape (`reshape(a, 2, 3)` or `(2, 3)`, one -1 allowed):
    `record("reshape", out, (a,), (a.shape,))`, the input's shape, to reshape the gradient back."""
    ### BEGIN SOLUTION
    shape = _shape(shape)
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) into {shape}") from None
    return record("reshape", out, (a,), (a.shape,))
    ### END SOLUTION

def _axis1(a, ax, op):
    n = a.ndim
    if not -n <= ax < n: raise ValueError(f"{op}: dimension {ax} is out of range for a tensor of shape {a.shape}")
    return ax % n

def squeeze(a, dim=None):
    """Drop size-1 dimensions (all, or those in `dim`): `reshape(a, new_shape)`."""
    ### BEGIN SOLUTION
    if dim is None: return reshape(a, tuple(s for s in a.shape if s != 1))
    dims = {_axis1(a, d, "squeeze") for d in ((dim,) if isinstance(dim, int) else dim)}
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if not (i in dims and s == 1)))
    ### END SOLUTION

def unsqueeze(a, dim):
    """Insert a size-1 dimension at `dim` (negative counts from the end): `reshape(a, new_shape)`."""
    ### BEGIN SOLUTION
    n = a.ndim + 1
    if not -n <= dim < n: raise ValueError(f"unsqueeze: dimension {dim} is out of range for a tensor of shape {a.shape}")
    dim %= n
    return reshape(a, a.shape[:dim] + (1,) + a.shape[dim:])
    ### END SOLUTION

def flatten(a, start_dim=0, end_dim=-1):
    """Merge dimensions `start_dim..end_dim` into one (a 0-d tensor becomes shape (1,)): `reshape(a, new_shape)`."""
    ### BEGIN SOLUTION
    if a.ndim == 0: return reshape(a, (1,))
    s, e = _axis1(a, start_dim, "flatten"), _axis1(a, end_dim, "flatten")
    return reshape(a, a.shape[:s] + (-1,) + a.shape[e + 1:])
    ### END SOLUTION

def permute(a, *dims):
    """Reorder all dimensions: `record("permute", out, (a,), (dims,))`, `dims` a tuple of non-negative ints."""
    ### BEGIN SOLUTION
    dims = _shape(dims)
    if len(dims) != a.ndim or sorted(d % a.ndim for d in dims if -a.ndim <= d < a.ndim) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {a.ndim} dimensions of shape {a.shape}")
    dims = tuple(d % a.ndim for d in dims)
    return record("permute", a.data.transpose(dims), (a,), (dims,))
    ### END SOLUTION

def transpose(a, dim0=-2, dim1=-1):
    """Swap two dimensions (the last two by default): `record("transpose", out, (a,), (d0, d1))`, both non-negative."""
    ### BEGIN SOLUTION
    d0, d1 = _axis1(a, dim0, "transpose"), _axis1(a, dim1, "transpose")
    return record("transpose", a.data.swapaxes(d0, d1), (a,), (d0, d1))
    ### END SOLUTION

def broadcast_to(a, *shape):
    """Repeat size-1 dimensions up to `shape` without copying (`np.broadcast_to`; -1 keeps a dimension):
    `record("expand", out, (a,))`. Nothing saved: the engine sums the gradient back to `a`'s shape."""
    ### BEGIN SOLUTION
    shape = _shape(shape)
    lead = len(shape) - a.ndim
    if lead < 0: raise ValueError(f"expand: cannot expand shape {a.shape} to fewer dimensions {shape}")
    if -1 in shape[:lead]: raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}: -1 on a new dimension")
    shape = tuple(a.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    try:
        out = np.broadcast_to(a.data, shape)
    except ValueError:
        raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}") from None
    return record("expand", out, (a,))
    ### END SOLUTION

expand = broadcast_to

# %%
def test_shape_records():
    x, y = _leaf(np.arange(24.0).reshape(2, 3, 4)), _leaf([[1.0], [2.0], [3.0]])
    X, Y = x.data, y.data
    with stand_in_rules():
        check_record(reshape(x, 4, -1), "reshape", (x,), X.reshape(4, 6), shape=X.shape)
        check_record(reshape(x, (6, 4)), "reshape", (x,), X.reshape(6, 4), shape=X.shape)
        check_record(unsqueeze(x, -1), "reshape", (x,), X[..., None], shape=X.shape)
        check_record(squeeze(y), "reshape", (y,), Y[:, 0], shape=Y.shape)
        check_record(flatten(x, 1), "reshape", (x,), X.reshape(2, 12), shape=X.shape)
        check_record(permute(x, 1, -1, 0), "permute", (x,), X.transpose(1, 2, 0), dims=(1, 2, 0))
        check_record(transpose(x, 0, -1), "transpose", (x,), X.swapaxes(0, 2), d0=0, d1=2)
        check_record(expand(y, 2, 3, 4), "expand", (y,), np.broadcast_to(Y, (2, 3, 4)))
        check_record(broadcast_to(y, -1, 5), "expand", (y,), np.broadcast_to(Y, (3, 5)))

def test_shape_errors():
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"):
        reshape(Tensor(np.ones((2, 3))), 4, 2)
    with pytest.raises(ValueError, match=r"expand: cannot expand shape \(3, 2\) to \(3, 4\)"):
        expand(Tensor(np.ones((3, 2))), 3, 4)
    with pytest.raises(ValueError, match="not a permutation"):
        permute(Tensor(np.ones((2, 3))), 0, 0)

# %%
run_tests("test_shape_records", "test_shape_errors")

# %% [markdown]
# ## Indexing, joining and selecting
#
# `t[idx]` accepts everything NumPy does: ints, slices, `None`, `...`, boolean masks and
# integer arrays (a *gather*). In the backward pass a gather must *add* the gradients of
# repeated indices (`t[[0, 0]]` uses row 0 twice), which is why module 02 uses
# `np.add.at` there and a plain assignment for basic slicing.
#
# `cat` joins tensors along an existing axis, `stack` along a new one, `split` cuts one
# tensor into pieces (PyTorch semantics: an int is the piece size, a list gives the sizes).
# `where(cond, a, b)` picks elementwise; `masked_fill(mask, value)` replaces where the mask
# is true. Comparisons return boolean tensors that never require gradients.

# %%
#| export
def _index_data(idx):
    "Replace tensors inside an index by their arrays."
    if isinstance(idx, Tensor): return idx.data
    if isinstance(idx, tuple): return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    return idx

def _is_basic_index(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)

def getitem(a, idx):
    """`a[idx]` for any NumPy index; tensors inside `idx` become arrays (`_index_data`):
    `record("getitem", out, (a,), (a.shape, idx, _is_basic_index(idx)))` with the converted `idx`."""
    ### BEGIN SOLUTION
    idx = _index_data(idx)
    try:
        out = a.data[idx]
    except IndexError as e:
        raise IndexError(f"index into a tensor of shape {a.shape}: {e}") from None
    return record("getitem", out, (a,), (a.shape, idx, _is_basic_index(idx)))
    ### END SOLUTION

def _tensors(tensors, op):
    tensors = [_tensor_operand(t) for t in tensors]
    if not tensors: raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    return tensors

def cat(tensors, axis=0, *, dim=None):
    """Join along an existing axis: `record("cat", out, tuple(tensors), (axis, sizes))`, `axis` non-negative and
    `sizes` each tensor's length along it."""
    ### BEGIN SOLUTION
    tensors = _tensors(tensors, "cat")
    axis = axis if dim is None else dim
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except (ValueError, np.exceptions.AxisError):
        raise ValueError(f"cat: shapes {[t.shape for t in tensors]} cannot be joined along axis {axis}") from None
    return record("cat", out, tuple(tensors), (axis % out.ndim, [t.shape[axis] for t in tensors]))
    ### END SOLUTION

concatenate = cat

def stack(tensors, axis=0, *, dim=None):
    """Join same-shaped tensors along a new axis: `record("stack", out, tuple(tensors), (axis,))`, `axis`
    non-negative (an axis of the output)."""
    ### BEGIN SOLUTION
    tensors = _tensors(tensors, "stack")
    axis = axis if dim is None else dim
    if len({t.shape for t in tensors}) != 1:
        raise ValueError(f"stack: all tensors must have the same shape; got {[t.shape for t in tensors]}")
    out = np.stack([t.data for t in tensors], axis=axis)
    return record("stack", out, tuple(tensors), (axis % out.ndim,))
    ### END SOLUTION

def split(a, split_size_or_sections, axis=0, *, dim=None):
    """Cut `a` along `axis`: an int is each piece's size (the last may be smaller), a list the sizes (they must
    add up to the axis' length). Returns a tuple of `getitem(a, slices)`: each piece records a "getitem"."""
    ### BEGIN SOLUTION
    axis = _axis1(a, axis if dim is None else dim, "split")
    n = a.shape[axis]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0: raise ValueError(f"split: piece size must be positive, got {step}")
        sizes = [builtins.min(step, n - s) for s in range(0, n, step)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {builtins.sum(sizes)}, but dimension {axis} has size {n}")
    pieces, start = [], 0
    for size in sizes:
        idx = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(a, idx))
        start += size
    return tuple(pieces)
    ### END SOLUTION

def where(condition, a, b):
    """`a` where `condition` (boolean) is true, else `b`; a number becomes a tensor of the other's dtype:
    `record("where", out, (a, b), (cond,))` with `cond` the boolean array."""
    ### BEGIN SOLUTION
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_: raise TypeError(f"where: condition must be boolean, got dtype {cond.dtype}")
    a = a if isinstance(a, Tensor) else Tensor(a, dtype=b.dtype if isinstance(b, Tensor) else None)
    b = b if isinstance(b, Tensor) else Tensor(b, dtype=a.dtype)
    try:
        out = np.where(cond, a.data, b.data)
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape}, {a.shape} and {b.shape} cannot be broadcast together") from None
    return record("where", out, (a, b), (cond,))
    ### END SOLUTION

def masked_fill(a, mask, value):
    """Put `value` where `mask` (boolean, broadcasting to `a`'s shape) is true:
    `record("masked_fill", out, (a,), (mask,))` with `mask` the boolean array."""
    ### BEGIN SOLUTION
    mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.dtype != np.bool_: raise TypeError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, a.shape) == a.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's shape {a.shape}")
    return record("masked_fill", np.where(mask, np.asarray(value, dtype=a.dtype), a.data), (a,), (mask,))
    ### END SOLUTION

def _compare(fn, op):
    def compare(a, b):
        b_data = b.data if isinstance(b, Tensor) else b
        try:
            return _wrap(fn(a.data, b_data))
        except ValueError:
            raise _broadcast_error(op, a.data, b_data) from None
    compare.__name__ = op
    return compare

# %%
def test_indexing_records():
    x = _leaf(np.arange(24.0).reshape(2, 3, 4))
    X = x.data
    with stand_in_rules():
        for idx, basic in [(0, True), ((1, 2), True), ((slice(None), 1), True), ((Ellipsis, 0), True),
                           ((None, 0), True), ((slice(None), [0, 2], [1, 3]), False), (X > 5, False)]:
            check_record(getitem(x, idx), "getitem", (x,), X[idx], shape=X.shape, idx=idx, basic=basic)
        check_record(getitem(x, Tensor([1, 1, 0])), "getitem", (x,), X[[1, 1, 0]], shape=X.shape,
                     idx=np.array([1, 1, 0]), basic=False)

def test_join_and_select_records():
    a, b, c = _leaf(np.ones((2, 3))), _leaf(np.arange(4.0).reshape(2, 2)), _leaf(np.arange(6.0).reshape(2, 3))
    cond = np.array([[True, False, True]])
    with stand_in_rules():
        check_record(cat([a, b], dim=-1), "cat", (a, b), np.concatenate([a.data, b.data], 1), axis=1, sizes=[3, 2])
        check_record(stack([a, c], axis=-1), "stack", (a, c), np.stack([a.data, c.data], -1), axis=2)
        check_record(where(cond, a, c), "where", (a, c), np.where(cond, a.data, c.data), cond=cond)
        check_record(masked_fill(c, cond, -np.inf), "masked_fill", (c,), np.where(cond, -np.inf, c.data), mask=cond)
        pieces = split(c, [1, 2], dim=1)
        for piece, cut in zip(pieces, (slice(0, 1), slice(1, 3))):
            check_record(piece, "getitem", (c,), c.data[:, cut], shape=(2, 3), idx=(slice(None), cut), basic=True)
        assert [p.shape for p in split(Tensor(np.arange(10.0)), 4)] == [(4,), (4,), (2,)]

def test_join_errors():
    with pytest.raises(ValueError, match=r"cat: shapes \[\(2, 3\), \(3, 2\)\] cannot be joined along axis 0"):
        cat([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))])
    with pytest.raises(ValueError, match="stack: all tensors must have the same shape"):
        stack([Tensor(np.ones(2)), Tensor(np.ones(3))])
    with pytest.raises(ValueError, match=r"add up to 4, but dimension 0 has size 5"):
        split(Tensor(np.ones(5)), [2, 2])
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast to the tensor's shape \(2,\)"):
        masked_fill(Tensor(np.ones(2)), np.ones(3, dtype=bool), 0.0)
    with pytest.raises(IndexError, match=r"shape \(2,\)"):
        getitem(Tensor(np.ones(2)), 5)

# %%
run_tests("test_indexing_records", "test_join_and_select_records", "test_join_errors")

# %% [markdown]
# ## Binding ops to the class
#
# The functions above become methods and operators, so `a + b`, `x.sum(axis=1)` and
# `x.T` read as they do in NumPy and PyTorch. `a + b` calls `add(a, b)` directly: no extra
# layer, which keeps the per-op overhead small.

# %%
#| export
def _reflected(fn):
    return lambda a, b: fn(_tensor_operand(b), a)

Tensor.__add__ = add
Tensor.__radd__ = lambda a, b: add(a, b)
Tensor.__sub__ = sub
Tensor.__rsub__ = rsub
Tensor.__mul__ = mul
Tensor.__rmul__ = lambda a, b: mul(a, b)
Tensor.__truediv__ = div
Tensor.__rtruediv__ = rdiv
Tensor.__neg__ = neg
Tensor.__pow__ = pow
Tensor.__rpow__ = lambda a, b: rpow(a, b) if _is_scalar(b) else pow(_tensor_operand(b), a)
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = _reflected(matmul)
Tensor.__getitem__ = getitem
Tensor.__lt__ = _compare(np.less, "lt")
Tensor.__le__ = _compare(np.less_equal, "le")
Tensor.__gt__ = _compare(np.greater, "gt")
Tensor.__ge__ = _compare(np.greater_equal, "ge")
Tensor.__eq__ = _compare(np.equal, "eq")
Tensor.__ne__ = _compare(np.not_equal, "ne")

for _fn in (exp, log, sqrt, tanh, sigmoid, relu, abs, maximum, minimum, clip, sum, mean, max, min, var,
            matmul, reshape, squeeze, unsqueeze, flatten, permute, transpose, expand, broadcast_to,
            masked_fill, split, neg):
    setattr(Tensor, _fn.__name__, _fn)
Tensor.view = reshape
Tensor.expand = broadcast_to
Tensor.clamp = clip
Tensor.pow = pow
Tensor.__abs__ = abs
Tensor.T = property(lambda a: record("permute", a.data.T, (a,), (tuple(range(a.ndim - 1, -1, -1)),)))
Tensor.mT = property(lambda a: transpose(a, -2, -1))

# %%
if __name__ == "__main__":
    x = Tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    print(x)
    try:
        print("row sums:", x.sum(axis=1), " x @ x.T:", x @ x.T)
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. `Tensor([1.0]) * np.float64(0.5)` and `Tensor([1.0]) * 0.5`: both stay float32, because
#    `_py` turns NumPy scalars into Python numbers; drop `_py` from `mul` and the first becomes float64.
# 2. Inside `with stand_in_rules():` print `(x * 2 + 1).sum()._node.op` and its `inputs` for
#    `x = Tensor([1.0], requires_grad=True)`; then set `x.requires_grad = False`: `_node` is None.
# 3. Time `x.reshape(-1)` against `x.T.reshape(-1)` on a 1000 x 1000 tensor: the first is a view
#    (no copy), the second must copy the transposed data into a new order.
