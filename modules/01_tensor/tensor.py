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
# array; every operation computes its result with NumPy and then hands it to one small
# function, `record`, which decides whether the operation must be remembered for the
# backward pass. Module 02 teaches the derivative of each op and the engine that walks the
# recorded graph; here we only compute forward values, but every op already goes through
# the dispatcher, so nothing has to change later.
#
# Design choices, each for a reason:
#
# - **float32 by default.** It is what models train in, it halves memory traffic, and BLAS
#   runs it about twice as fast as float64. Ask for `dtype=np.float64` when you want it
#   (gradient checks do).
# - **Python numbers stay weak.** `x * 0.5` on a float32 tensor stays float32 (NumPy 2's
#   promotion rules), so a stray scalar never turns a model into float64.
# - **One dispatcher, one table.** `record(op, data, inputs, saved)` looks up the op's
#   derivative rule in `DERIVATIVES`, a table that `tinytorch.core.autograd` fills, the way
#   PyTorch's `derivatives.yaml` pairs each op with its gradient formula. This module never
#   imports module 02, so dependencies point one way only.

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
# `saved`, the arrays the rule will need (for `a * b` the rule needs `a` and `b`). Otherwise
# the output is a plain leaf and nothing is kept alive: this is what makes `no_grad`
# inference cheap.
#
# Whether gradients are enabled is per thread (`threading.local`), as in PyTorch: a thread
# that evaluates under `no_grad` never switches recording off for a thread that trains. It
# is the one piece of thread state in the engine, since `record` reads it on every op and a
# thread-local attribute costs no more than a dictionary lookup; the rest (a generator and
# scratch buffers per worker thread) is module 18's.

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
def test_tensor_basics():
    t = Tensor([[1, 2], [3, 4.5]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and t.ndim == 2
    assert Tensor(np.zeros(3, dtype=np.float64)).dtype == np.float32          # float32 by default
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64                 # float64 when asked
    assert Tensor([1, 2]).dtype == np.int64 and Tensor([True]).dtype == np.bool_
    assert Tensor(Tensor([1.0], dtype=np.float64)).dtype == np.float64         # a Tensor keeps its dtype
    assert Tensor([[1.0, 2.0]]).tolist() == [[1.0, 2.0]] and Tensor([3.5]).item() == 3.5
    assert np.asarray(t).dtype == np.float32 and np.array_equal(np.asarray(t), t.numpy())
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
    assert "dtype=int64" in repr(Tensor([1]))

def test_tensor_errors():
    import pytest
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients.*int64"):
        Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="numeric"):
        Tensor(["a"])
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        Tensor([1.0, 2.0]).item()

def test_record_without_grad_keeps_nothing():
    a = Tensor([1.0])
    out = record("anything", a.data * 2, (a,), (a.data,))
    assert out._node is None and not out.requires_grad    # no input needs grad: nothing recorded

# %% [markdown]
# ## Textbook code and fast kernels
#
# Every function you write in this course is the textbook form of its idea, built from
# the ops before it, and autograd derives its backward pass. A few of them (LayerNorm,
# GELU, softmax, cross-entropy, attention) run on every position of every layer, and module
# 16 gives each a *fused kernel*: the same function as a few NumPy passes with a
# hand-written backward, tested equal to the textbook version. Marking a function
# `@replaceable("name")` is what lets a registered kernel of that name run in its place:
#
# ```python
# @replaceable("layer_norm")
# def layer_norm(x, ...): ...        # the textbook version: what you write
#
# register_kernel("layer_norm", fused_layer_norm)     # module 17, one explicit call
# ```
#
# Only functions of the installed `tinytorch` package are replaceable: the copy a notebook
# defines always runs as written, so your tests always test your code. `register_kernel(name,
# None)` removes a kernel; `f.textbook` is the textbook version of a replaceable `f`.

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

# %%
def test_replaceable_runs_a_registered_kernel_for_package_functions_only():
    def double(x): return 2 * x
    double.__module__ = "tinytorch.example"
    fast = replaceable("example_double")(double)
    assert fast(3) == 6 and fast.textbook is double and fast.__name__ == "double"
    try:
        register_kernel("example_double", lambda x: x + x + 0.5)
        assert fast(3) == 6.5                                  # the registered kernel runs
        def mine(x): return 2 * x
        assert replaceable("example_double")(mine) is mine     # a notebook's function is never replaced
    finally:
        register_kernel("example_double", None)
    assert fast(3) == 6 and "example_double" not in KERNELS

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

# %%
def test_creation():
    assert zeros(2, 3).shape == (2, 3) and zeros((2, 3)).dtype == np.float32
    assert ones(2, dtype=np.float64).dtype == np.float64
    assert np.array_equal(full((2,), 7.0).data, [7.0, 7.0])
    assert np.array_equal(arange(4).data, [0, 1, 2, 3]) and arange(4).dtype == np.int64
    assert arange(0.0, 1.0, 0.5).dtype == np.float32
    assert zeros_like(ones(2, 2, dtype=np.float64)).dtype == np.float64
    manual_seed(0); a = randn(3, 4)
    manual_seed(0); b = randn(3, 4)
    assert np.array_equal(a.data, b.data) and a.dtype == np.float32
    assert 0.0 <= rand(100).data.min() and rand(100).data.max() < 1.0

def test_random_source_holds_the_generator():
    previous = set_random_source(RandomSource(np.random.default_rng(0)))
    try:
        c = randn(3, 4)                                 # drawn from the installed source's generator
        manual_seed(0)
        assert random_source().generator is get_rng() and np.array_equal(randn(3, 4).data, c.data)
    finally:
        set_random_source(previous)
    assert random_source() is previous

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
    "a + b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("add_scalar", a.data + b, (a,))
    b = _tensor_operand(b)
    return record("add", _binary("add", np.add, a, b), (a, b))
    ### END SOLUTION

def sub(a, b):
    "a - b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("add_scalar", a.data - b, (a,))
    b = _tensor_operand(b)
    return record("sub", _binary("sub", np.subtract, a, b), (a, b))
    ### END SOLUTION

def rsub(a, b):
    "b - a, for a number b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("rsub_scalar", b - a.data, (a,))
    return sub(_tensor_operand(b), a)
    ### END SOLUTION

def mul(a, b):
    "a * b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("mul_scalar", a.data * b, (a,), (b,))
    b = _tensor_operand(b)
    return record("mul", _binary("mul", np.multiply, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def div(a, b):
    "a / b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("div_scalar", a.data / b, (a,), (b,))
    b = _tensor_operand(b)
    return record("div", _binary("div", np.divide, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def rdiv(a, b):
    "b / a, for a number b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("rdiv_scalar", b / a.data, (a,), (a.data, b))
    return div(_tensor_operand(b), a)
    ### END SOLUTION

def neg(a):
    "-a"
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
    "a ** b, for a number or a tensor b"
    ### BEGIN SOLUTION
    b = _py(b)
    if _is_scalar(b): return record("pow_scalar", _power(a.data, b), (a,), (a.data, b))
    b = _tensor_operand(b)
    out = _binary("pow", np.power, a, b)
    return record("pow", out, (a, b), (a.data, b.data, out))
    ### END SOLUTION

def rpow(a, b):
    "b ** a, for a number b"
    ### BEGIN SOLUTION
    b = _py(b)
    out = np.power(b, a.data)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_base = float(np.log(b))
    return record("rpow_scalar", out, (a,), (out, log_base))
    ### END SOLUTION

# %%
def test_arithmetic_forward():
    a = Tensor(np.arange(6.0).reshape(2, 3))
    b = Tensor([10.0, 20.0, 30.0])
    assert np.array_equal(add(a, b).data, a.data + b.data)
    assert np.array_equal(sub(a, b).data, a.data - b.data)
    assert np.array_equal(mul(a, b).data, a.data * b.data)
    assert np.allclose(div(a, b).data, a.data / b.data)
    assert np.array_equal(rsub(a, 1.0).data, 1.0 - a.data)
    assert np.allclose(rdiv(b, 2.0).data, 2.0 / b.data)
    assert np.array_equal(neg(a).data, -a.data)
    for n in (2, 3, 0.5, -1, 1.5):
        assert np.allclose(pow(b, n).data, b.data ** n)
    assert np.allclose(rpow(a, 2.0).data, 2.0 ** a.data)
    assert mul(a, 0.5).dtype == np.float32              # a Python float does not promote to float64

def test_broadcast_error_names_op_and_shapes():
    import pytest
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        mul(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))

# %% [markdown]
# Run this cell to check the arithmetic above: one line per test, then a total. From the
# shell, `tito module test 1` runs every test of this module and `tito module complete 1`
# exports your code into `tinytorch` once they pass.

# %%
from tito.notebook import run_tests
run_tests(test_arithmetic_forward, test_broadcast_error_names_op_and_shapes)

# %% [markdown]
# ## Elementwise functions
#
# `exp log sqrt tanh sigmoid relu abs`, and the two-input `maximum`/`minimum` and `clip`.
# The sigmoid is computed as `0.5 * (1 + tanh(x / 2))`, which is exact algebra and never
# overflows, unlike `1 / (1 + exp(-x))` for large negative `x`.

# %%
#| export
def exp(a):
    ### BEGIN SOLUTION
    out = np.exp(a.data)
    return record("exp", out, (a,), (out,))
    ### END SOLUTION

def log(a):
    ### BEGIN SOLUTION
    return record("log", np.log(a.data), (a,), (a.data,))
    ### END SOLUTION

def sqrt(a):
    ### BEGIN SOLUTION
    out = np.sqrt(a.data)
    return record("sqrt", out, (a,), (out,))
    ### END SOLUTION

def tanh(a):
    ### BEGIN SOLUTION
    out = np.tanh(a.data)
    return record("tanh", out, (a,), (out,))
    ### END SOLUTION

def sigmoid(a):
    ### BEGIN SOLUTION
    out = np.tanh(a.data * 0.5)
    out += 1.0
    out *= 0.5
    return record("sigmoid", out, (a,), (out,))
    ### END SOLUTION

def relu(a):
    ### BEGIN SOLUTION
    return record("relu", np.maximum(a.data, 0), (a,), (a.data,))
    ### END SOLUTION

def abs(a):
    ### BEGIN SOLUTION
    return record("abs", np.abs(a.data), (a,), (a.data,))
    ### END SOLUTION

def maximum(a, b):
    "Elementwise maximum; at ties the gradient is split evenly, as in PyTorch."
    ### BEGIN SOLUTION
    a, b = _tensor_operand(a), _tensor_operand(b)
    return record("maximum", _binary("maximum", np.maximum, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def minimum(a, b):
    "Elementwise minimum; at ties the gradient is split evenly, as in PyTorch."
    ### BEGIN SOLUTION
    a, b = _tensor_operand(a), _tensor_operand(b)
    return record("minimum", _binary("minimum", np.minimum, a, b), (a, b), (a.data, b.data))
    ### END SOLUTION

def clip(a, min=None, max=None):
    "Clamp to [min, max]; the gradient flows where min <= a <= max (PyTorch's `clamp`)."
    ### BEGIN SOLUTION
    if min is None and max is None: raise ValueError("clip: give at least one of min and max")
    min, max = _py(min), _py(max)
    return record("clip", np.clip(a.data, min, max), (a,), (a.data, min, max))
    ### END SOLUTION

# %%
def test_elementwise_forward():
    x = Tensor([-800.0, -1.0, 0.0, 2.0, 800.0])
    assert np.allclose(sigmoid(x).data, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2.0)), 1.0])
    assert np.all(np.isfinite(sigmoid(x).data))
    assert np.array_equal(relu(x).data, [0, 0, 0, 2, 800]) and np.array_equal(abs(x).data, np.abs(x.data))
    p = Tensor([0.25, 4.0])
    assert np.allclose(sqrt(p).data, [0.5, 2.0]) and np.allclose(log(exp(p)).data, p.data)
    assert np.allclose(tanh(p).data, np.tanh(p.data))
    assert np.array_equal(maximum(x, Tensor(0.0)).data, relu(x).data)
    assert np.array_equal(minimum(x, Tensor([1.0])).data, np.minimum(x.data, 1.0))
    assert np.array_equal(clip(x, -1.0, 1.0).data, [-1, -1, 0, 1, 1])

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
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    return record("sum", a.data.sum(axis=axes, keepdims=keep), (a,), (a.shape, axes, keep))
    ### END SOLUTION

def mean(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    count = 1
    for ax in axes: count *= a.shape[ax]
    out = a.data.sum(axis=axes, keepdims=keep) / count      # np.mean does the same with more Python overhead
    return record("mean", out, (a,), (a.shape, axes, keep))
    ### END SOLUTION

def max(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    "Largest value (like `torch.amax`); ties share the gradient evenly."
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    out = a.data.max(axis=axes, keepdims=True)
    return record("max", out if keep else out.reshape(np.delete(a.shape, axes)), (a,), (a.data, out, axes, keep))
    ### END SOLUTION

def min(a, axis=None, keepdims=False, *, dim=None, keepdim=None):
    "Smallest value (like `torch.amin`); ties share the gradient evenly."
    ### BEGIN SOLUTION
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    out = a.data.min(axis=axes, keepdims=True)
    return record("min", out if keep else out.reshape(np.delete(a.shape, axes)), (a,), (a.data, out, axes, keep))
    ### END SOLUTION

def var(a, axis=None, keepdims=False, correction=1, *, dim=None, keepdim=None, unbiased=None):
    "Variance; `correction=1` (PyTorch's default) divides by n - 1."
    ### BEGIN SOLUTION
    if unbiased is not None: correction = int(unbiased)
    axes, keep = _axis(a.ndim, axis, dim), _keep(keepdims, keepdim)
    n = int(np.prod([a.shape[i] for i in axes]))
    centered = a.data - a.data.mean(axis=axes, keepdims=True)
    out = np.sum(centered * centered, axis=axes, keepdims=keep) / (n - correction)
    return record("var", out, (a,), (centered, axes, keep, n - correction))
    ### END SOLUTION

# %%
def test_reductions_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert np.array_equal(sum(x).data, x.data.sum())
    assert np.array_equal(sum(x, axis=(0, 2)).data, x.data.sum(axis=(0, 2)))
    assert sum(x, dim=1, keepdim=True).shape == (2, 1, 4)
    assert np.allclose(mean(x, axis=-1).data, x.data.mean(axis=-1))
    assert np.array_equal(max(x, axis=1).data, x.data.max(axis=1)) and max(x, axis=1).shape == (2, 4)
    assert np.array_equal(min(x, axis=(0, 1), keepdims=True).data, x.data.min(axis=(0, 1), keepdims=True))
    assert np.allclose(var(x, axis=2).data, x.data.var(axis=2, ddof=1))
    assert np.allclose(var(x, axis=2, correction=0).data, x.data.var(axis=2))

def test_reduction_axis_errors():
    import pytest
    with pytest.raises(ValueError, match="axis 3 is out of range for a tensor with 2 dimensions"):
        sum(Tensor(np.ones((2, 2))), axis=3)
    with pytest.raises(TypeError, match="either axis= or dim="):
        sum(Tensor(np.ones(2)), axis=0, dim=0)

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
def test_matmul_forward():
    rng = np.random.default_rng(0)
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
                   ((2, 1, 3, 4), (5, 4, 2))]:
        a, b = rng.standard_normal(sa), rng.standard_normal(sb)
        assert np.allclose(matmul(Tensor(a), Tensor(b)).data, a @ b)

def test_matmul_errors():
    import pytest
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 6\) do not match"):
        matmul(Tensor(np.ones((3, 4))), Tensor(np.ones((5, 6))))

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
    ### BEGIN SOLUTION
    if dim is None: return reshape(a, tuple(s for s in a.shape if s != 1))
    dims = {_axis1(a, d, "squeeze") for d in ((dim,) if isinstance(dim, int) else dim)}
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if not (i in dims and s == 1)))
    ### END SOLUTION

def unsqueeze(a, dim):
    ### BEGIN SOLUTION
    n = a.ndim + 1
    if not -n <= dim < n: raise ValueError(f"unsqueeze: dimension {dim} is out of range for a tensor of shape {a.shape}")
    dim %= n
    return reshape(a, a.shape[:dim] + (1,) + a.shape[dim:])
    ### END SOLUTION

def flatten(a, start_dim=0, end_dim=-1):
    ### BEGIN SOLUTION
    if a.ndim == 0: return reshape(a, (1,))
    s, e = _axis1(a, start_dim, "flatten"), _axis1(a, end_dim, "flatten")
    return reshape(a, a.shape[:s] + (-1,) + a.shape[e + 1:])
    ### END SOLUTION

def permute(a, *dims):
    ### BEGIN SOLUTION
    dims = _shape(dims)
    if len(dims) != a.ndim or sorted(d % a.ndim for d in dims if -a.ndim <= d < a.ndim) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {a.ndim} dimensions of shape {a.shape}")
    dims = tuple(d % a.ndim for d in dims)
    return record("permute", a.data.transpose(dims), (a,), (dims,))
    ### END SOLUTION

def transpose(a, dim0=-2, dim1=-1):
    "Swap two dimensions (the last two by default)."
    ### BEGIN SOLUTION
    d0, d1 = _axis1(a, dim0, "transpose"), _axis1(a, dim1, "transpose")
    return record("transpose", a.data.swapaxes(d0, d1), (a,), (d0, d1))
    ### END SOLUTION

def broadcast_to(a, *shape):
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
def test_shape_ops_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert reshape(x, 4, -1).shape == (4, 6) and reshape(x, (6, 4)).shape == (6, 4)
    assert unsqueeze(x, 1).shape == (2, 1, 3, 4) and unsqueeze(x, -1).shape == (2, 3, 4, 1)
    assert squeeze(unsqueeze(x, 0)).shape == (2, 3, 4) and squeeze(Tensor(np.ones((1, 2, 1))), 0).shape == (2, 1)
    assert flatten(x).shape == (24,) and flatten(x, 1).shape == (2, 12)
    assert np.array_equal(transpose(x, 0, 2).data, x.data.transpose(2, 1, 0))
    assert np.array_equal(permute(x, 1, 2, 0).data, x.data.transpose(1, 2, 0))
    assert expand(Tensor(np.ones((3, 1))), 2, 3, 4).shape == (2, 3, 4)
    assert expand(Tensor(np.ones((3, 1))), -1, 5).shape == (3, 5)

def test_shape_errors():
    import pytest
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"):
        reshape(Tensor(np.ones((2, 3))), 4, 2)
    with pytest.raises(ValueError, match=r"expand: cannot expand shape \(3, 2\) to \(3, 4\)"):
        expand(Tensor(np.ones((3, 2))), 3, 4)
    with pytest.raises(ValueError, match="not a permutation"):
        permute(Tensor(np.ones((2, 3))), 0, 0)

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
    "Join tensors along an existing axis."
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
    "Join same-shaped tensors along a new axis."
    ### BEGIN SOLUTION
    tensors = _tensors(tensors, "stack")
    axis = axis if dim is None else dim
    if len({t.shape for t in tensors}) != 1:
        raise ValueError(f"stack: all tensors must have the same shape; got {[t.shape for t in tensors]}")
    out = np.stack([t.data for t in tensors], axis=axis)
    return record("stack", out, tuple(tensors), (axis % out.ndim,))
    ### END SOLUTION

def split(a, split_size_or_sections, axis=0, *, dim=None):
    "Cut into pieces: an int is the size of each piece (the last may be smaller), a list the sizes."
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
    "Elementwise `a` where `condition` is true, else `b`."
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
    "Replace the entries where `mask` is true by `value` (the mask broadcasts to `a`'s shape)."
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
def test_indexing_forward():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    for idx in [0, (1, 2), (slice(None), 1), (Ellipsis, 0), (None, 0), ([1, 1, 0],), (x.data > 5,),
                (slice(None), [0, 2], [1, 3]), Tensor([0, 1])]:
        expected = x.data[_index_data(idx)]
        assert np.array_equal(getitem(x, idx).data, expected)

def test_join_and_select_forward():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.zeros((2, 2)))
    assert cat([a, b], axis=1).shape == (2, 5) and cat([a, a], dim=0).shape == (4, 3)
    assert stack([a, a], axis=1).shape == (2, 2, 3)
    pieces = split(Tensor(np.arange(10.0)), 4)
    assert [p.shape for p in pieces] == [(4,), (4,), (2,)]
    assert [p.shape for p in split(Tensor(np.ones((2, 5))), [2, 3], dim=1)] == [(2, 2), (2, 3)]
    x = Tensor([1.0, -2.0, 3.0])
    assert np.array_equal(where(x.data > 0, x, Tensor(0.0)).data, [1.0, 0.0, 3.0])
    assert np.array_equal(masked_fill(x, x.data < 0, -np.inf).data, [1.0, -np.inf, 3.0])

def test_join_errors():
    import pytest
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
def test_operators_bound():
    a, b = Tensor([[1.0, 2.0], [3.0, 4.0]]), Tensor([10.0, 20.0])
    assert np.array_equal((a + b).data, a.data + b.data) and np.array_equal((1 + a).data, 1 + a.data)
    assert np.array_equal((2.0 - a).data, 2.0 - a.data) and np.allclose((1 / a).data, 1 / a.data)
    assert np.array_equal((a @ a).data, a.data @ a.data) and np.array_equal(a.T.data, a.data.T)
    assert np.array_equal((a ** 2).data, a.data ** 2) and np.allclose((2 ** a).data, 2 ** a.data)
    assert np.array_equal((np.float32(2) * a).data, 2 * a.data)            # NumPy scalars defer to Tensor
    assert (a > 2).dtype == np.bool_ and np.array_equal((a > 2).data, a.data > 2)
    assert a.sum(dim=0).shape == (2,) and a.view(4).shape == (4,) and a[0, 1].item() == 2.0
    assert {a: 1}[a] == 1                                                    # tensors stay hashable

# %%
if __name__ == "__main__":
    x = Tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    print(x)
    print("row sums:", x.sum(axis=1), " x @ x.T:", x @ x.T)
