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
# # 05 Layers
# > Parameters, the Module system, Linear, Dropout, containers, and saving weights to disk.
#
# A model is a tree of modules, each owning some parameters: a GPT owns blocks, a block owns
# an attention layer and an MLP, an MLP owns two `Linear` layers, a `Linear` owns a weight
# and a bias. Everything a training loop needs — all parameters for the optimizer, a flat
# dictionary of arrays for a checkpoint, a switch between training and evaluation — is a
# walk over that tree. `Module` implements the walk once; every layer inherits it.
#
# Names follow PyTorch's `torch.nn.Module`, so state dicts move between the two frameworks
# unchanged: `Linear.weight` has PyTorch's shape `(out_features, in_features)`.


# %% [markdown]
# **How to test and complete.** Every group of functions is followed by its tests. From the
# shell, `tito module test 5` runs this notebook's tests and `tito module complete 5`
# tests your notebook, exports it into the `tinytorch` package and runs the package tests.

# %%
#| default_exp core.layers

# %%
#| export
import functools
import io
import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
from tinytorch.core.tensor import Tensor, record, replaceable, get_rng, as_tensor, DEFAULT_DTYPE
from tinytorch.core.autograd import derivative

# %% [markdown]
# ## Parameter
#
# A `Parameter` is a tensor that a module registers as trainable. It is a `Tensor`
# subclass that requires a gradient by default; nothing else about it differs.

# %%
#| export
class Parameter(Tensor):
    "A tensor that a Module registers as trainable."
    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

# %% [markdown]
# ## Module
#
# Assigning a `Parameter` or a `Module` to an attribute registers it, in assignment order,
# in `_parameters` or `_modules`; buffers (non-trainable state such as a causal mask) are
# registered with `register_buffer`. Attribute lookup stays an ordinary instance-dict lookup,
# so `self.weight` costs nothing extra in `forward`.
#
# `named_parameters()` walks the tree and yields dotted names (`blocks.0.attn.weight`). A
# parameter shared by two modules (weight tying) is yielded once, so the optimizer updates it
# once and `num_parameters()` counts it once. `state_dict()` lists every name, as PyTorch
# does, so a tied weight appears under both of its names.
#
# `load_state_dict` checks everything before it changes anything: with `strict=True` one
# error lists the missing keys, the unexpected keys and every shape mismatch, and the model
# is left untouched. Values are copied into the existing arrays, so an optimizer that holds
# the parameters keeps working after a load.

# %%
#| export
class StateDictError(KeyError):
    "A state dict does not fit the module: missing or unexpected keys, or wrong shapes."
    def __str__(self): return self.args[0]


class Module:
    "Base class of every layer and model: registers parameters, sub-modules and buffers."

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_persistent", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        registries = self.__dict__.get("_parameters")
        if registries is None and isinstance(value, (Parameter, Module)):
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning '{name}'")
        if registries is not None:
            for reg in (self._parameters, self._modules):
                reg.pop(name, None)
            if isinstance(value, Parameter): self._parameters[name] = value
            elif isinstance(value, Module): self._modules[name] = value
            elif name in self._buffers: self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for reg in (self._parameters, self._modules, self._buffers):
            reg.pop(name, None)
        self._persistent.discard(name)
        object.__delattr__(self, name)

    def register_buffer(self, name, value, persistent=True):
        "Register non-trainable state (saved in the state dict when `persistent`)."
        value = value if isinstance(value, Tensor) or value is None else as_tensor(np.asarray(value))
        self._buffers[name] = value
        if persistent: self._persistent.add(name)
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- walking the tree -------------------------------------------------------------------
    def named_modules(self, prefix=""):
        "Yield (dotted name, module) for this module and every descendant, each once."
        ### BEGIN SOLUTION
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen: continue
            seen.add(id(mod))
            yield name, mod
            children = [(f"{name}.{n}" if name else n, m) for n, m in mod._modules.items()]
            stack.extend(reversed(children))
        ### END SOLUTION

    def modules(self):
        for _, m in self.named_modules(): yield m

    def named_children(self):
        yield from self._modules.items()

    def children(self):
        yield from self._modules.values()

    def named_parameters(self, prefix="", remove_duplicate=True):
        "Yield (dotted name, parameter); a shared parameter is yielded once unless `remove_duplicate=False`."
        ### BEGIN SOLUTION
        seen = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, p in mod._parameters.items():
                if p is None or (remove_duplicate and id(p) in seen): continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p
        ### END SOLUTION

    def parameters(self):
        for _, p in self.named_parameters(): yield p

    def named_buffers(self):
        for mod_name, mod in self.named_modules():
            for name, b in mod._buffers.items():
                if b is not None: yield (f"{mod_name}.{name}" if mod_name else name), b

    def num_parameters(self, trainable_only=False):
        "Number of scalars in the model's parameters, each shared parameter counted once."
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    # -- modes and gradients ----------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules(): object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none: p.grad = None
            elif p.grad is not None: p.grad.data[...] = 0

    def apply(self, fn):
        for m in self.modules(): fn(m)
        return self

    def to(self, dtype):
        "Convert every floating parameter and buffer to `dtype`, in place (e.g. np.float64 for gradient checks)."
        for m in self.modules():
            for reg in (m._parameters, m._buffers):
                for t in reg.values():
                    if t is not None and t.dtype.kind == "f": t.data = t.data.astype(dtype)
        return self

    def double(self): return self.to(np.float64)
    def float(self): return self.to(np.float32)

    # -- state dicts ------------------------------------------------------------------------
    def _state_entries(self):
        "Every (name, tensor) that belongs in a state dict, tied parameters under each name."
        for mod_name, mod in self.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            for name, p in mod._parameters.items():
                if p is not None: yield pre + name, p
            for name, b in mod._buffers.items():
                if b is not None and name in mod._persistent: yield pre + name, b

    def state_dict(self):
        "An ordered dict of name -> NumPy array (a copy), in registration order."
        return OrderedDict((name, t.data.copy()) for name, t in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        "Copy arrays into this module; check every key and shape first and change nothing on error."
        ### BEGIN SOLUTION
        entries = OrderedDict(self._state_entries())
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        mismatched = []
        for k, t in entries.items():
            if k in state_dict:
                got = np.shape(state_dict[k].data if isinstance(state_dict[k], Tensor) else state_dict[k])
                if got != t.shape: mismatched.append((k, t.shape, got))
        problems = []
        if strict and missing: problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected: problems.append("unexpected keys: " + ", ".join(unexpected))
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(f"{k} expected {e}, got {g}" for k, e, g in mismatched))
        if problems:
            raise StateDictError(f"cannot load state dict into {type(self).__name__}: " + " | ".join(problems))
        for k, t in entries.items():
            if k in state_dict:
                value = state_dict[k]
                t.data[...] = value.data if isinstance(value, Tensor) else np.asarray(value)
        return missing, unexpected
        ### END SOLUTION

    # -- printing -----------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines: return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

# %%
import pytest

class _Toy(Module):
    def __init__(self):
        super().__init__()
        self.w = Parameter(np.ones((2, 3)))
        self.inner = _Inner()
        self.register_buffer("mask", np.tril(np.ones((2, 2), dtype=bool)))

class _Inner(Module):
    def __init__(self):
        super().__init__()
        self.b = Parameter(np.zeros(3))

def test_registration_and_names():
    m = _Toy()
    assert [n for n, _ in m.named_parameters()] == ["w", "inner.b"]
    assert list(m.state_dict()) == ["w", "mask", "inner.b"]
    assert [n for n, _ in m.named_modules()] == ["", "inner"] and list(m.children()) == [m.inner]
    assert m.num_parameters() == 9
    m.eval(); assert not m.training and not m.inner.training
    m.train(); assert m.inner.training

def test_shared_parameter_counted_once():
    m = _Toy()
    m.inner.b = m.w                       # tie: one Parameter under two names
    assert [n for n, _ in m.named_parameters()] == ["w"] and m.num_parameters() == 6
    assert list(m.state_dict()) == ["w", "mask", "inner.b"]

def test_load_state_dict_checks_everything_first():
    m = _Toy()
    sd = m.state_dict()
    sd["w"] = sd["w"] + 1
    m.load_state_dict(sd)
    assert np.array_equal(m.w.data, np.full((2, 3), 2.0, dtype=np.float32))
    bad = dict(sd); del bad["inner.b"]; bad["extra"] = np.zeros(1); bad["w"] = np.zeros((3, 2))
    with pytest.raises(StateDictError, match=r"missing keys: inner\.b \| unexpected keys: extra \| "
                                             r"shape mismatches: w expected \(2, 3\), got \(3, 2\)"):
        m.load_state_dict(bad)
    assert np.array_equal(m.w.data, np.full((2, 3), 2.0))                  # untouched on error

def test_module_errors():
    class Forgot(Module):
        def __init__(self): self.w = Parameter(np.ones(1))
    with pytest.raises(RuntimeError, match="call super\\(\\).__init__\\(\\) before assigning 'w'"):
        Forgot()

# %% [markdown]
# ## Linear
#
# $y = x W^\top + b$ with $W$ of shape `(out_features, in_features)`. The input may have any
# number of leading dimensions `(..., in_features)`; `matmul` and broadcasting handle them,
# and autograd derives the backward pass ($\partial L/\partial X = G W$, $\partial L/\partial W
# = G^\top X$, $\partial L/\partial b = \sum_n G_n$ for the rows $X$ and their gradients $G$).
# Module 18 has a fused kernel for it, tested equal to this code: it flattens the leading
# dimensions into one GEMM and records one node instead of three (transpose, matmul, add),
# which saves the temporary arrays and a pass over the output in both directions.
#
# Initialisation matches PyTorch: weight and bias uniform in $\pm 1/\sqrt{\text{in\_features}}$.

# %%
#| export
def check_linear_input(x, weight, who="linear"):
    "Raise a clear error unless x is a floating-point tensor whose last dimension is weight's in_features."
    in_features = weight.shape[1]
    if x.shape[-1:] != (in_features,):
        raise ValueError(f"{who}: input of shape {x.shape} does not match weight of shape {weight.shape}; "
                         f"expected last dimension {in_features}")
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: expected a floating-point input, got dtype {x.dtype} (token ids need an Embedding first)")


@replaceable("linear")
def linear(x, weight, bias=None):
    """y = x @ weight.T + bias over any leading dimensions.

    x is (..., in_features), weight (out_features, in_features), bias (out_features,) or None;
    returns (..., out_features), built from `matmul`, `.T` and `+`."""
    check_linear_input(x, weight)
    ### BEGIN SOLUTION
    y = x @ weight.T
    return y if bias is None else y + bias
    ### END SOLUTION


def _uniform(shape, bound):
    "Uniform in [-bound, bound), drawn directly in float32 (a float64 draw plus a cast costs 10x more)."
    data = get_rng().random(shape, dtype=np.float32)
    data *= np.float32(2 * bound)
    data -= np.float32(bound)
    return Parameter(data)


class Linear(Module):
    "y = x W^T + b, with PyTorch's weight shape (out_features, in_features) and initialisation."
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: sizes must be positive, got in_features={in_features}, out_features={out_features}")
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / np.sqrt(in_features)
        self.weight = _uniform((out_features, in_features), bound)
        self.bias = _uniform((out_features,), bound) if bias else None

    def forward(self, x):
        return linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

# %%
from tinytorch.core.autograd import gradcheck

def test_linear_matches_formula_and_gradcheck():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 4)), dtype=np.float64)
    w = Parameter(rng.standard_normal((5, 4)), dtype=np.float64)
    b = Parameter(rng.standard_normal(5), dtype=np.float64)
    assert np.allclose(linear(x, w, b).data, x.data @ w.data.T + b.data, rtol=1e-14)
    assert gradcheck(linear, [x, w, b]) and gradcheck(linear, [x, w])

def test_linear_layer_init_and_errors():
    layer = Linear(100, 7)
    assert layer.weight.shape == (7, 100) and layer.bias.shape == (7,) and layer.weight.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= 0.1 and np.abs(layer.weight.data).max() > 0.09
    with pytest.raises(ValueError, match=r"input of shape \(2, 3\) does not match weight of shape \(7, 100\)"):
        layer(Tensor(np.ones((2, 3))))
    with pytest.raises(TypeError, match="token ids need an Embedding"):
        layer(Tensor(np.ones((2, 100), dtype=np.int64)))
    assert "Linear(in_features=100, out_features=7, bias=True)" == repr(layer)

# %% [markdown]
# ## Dropout
#
# During training each element is zeroed with probability `p` and the survivors are scaled
# by $1/(1-p)$ ("inverted" dropout), so the expected activation is unchanged and evaluation
# needs no rescaling: in `eval()` mode dropout is the identity. The mask is drawn from
# tinytorch's generator, so `manual_seed` makes it reproducible.

# %%
#| export
def dropout(x, p=0.5, training=True):
    "Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."
    ### BEGIN SOLUTION
    if not 0.0 <= p <= 1.0: raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0: return x
    if p == 1.0: mask = np.zeros(x.shape, dtype=x.dtype)
    else: mask = (get_rng().random(x.shape, dtype=np.float32) >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return record("dropout", x.data * mask, (x,), (mask,))
    ### END SOLUTION


@derivative("dropout")
def _dropout_backward(g, mask):
    "dropout saved `mask` (0 or 1/(1-p) per element): return `(g * mask,)`."
    ### BEGIN SOLUTION
    return (g * mask,)
    ### END SOLUTION


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0: raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self): return f"p={self.p}"

# %%
from tinytorch.core.tensor import manual_seed

def test_dropout():
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    d = Dropout(0.25)
    manual_seed(1); y1 = d(x)
    manual_seed(1); y2 = d(x)
    assert np.array_equal(y1.data, y2.data)                                   # reproducible
    kept = y1.data != 0
    assert np.allclose(y1.data[kept], 1 / 0.75) and abs(kept.mean() - 0.75) < 0.02
    y1.sum().backward()
    assert np.array_equal(x.grad.data, y1.data)                               # gradient = mask
    assert d.eval()(x) is x
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\], got 1.5"):
        Dropout(1.5)

# %% [markdown]
# ## Containers
#
# `Sequential` chains callables; `ModuleList` holds sub-modules (the blocks of a
# transformer) so that they are registered under the names `0`, `1`, …

# %%
#| export
class Sequential(Module):
    "Apply modules one after another."
    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        self._order = list(modules)

    def forward(self, x):
        for m in self._order: x = m(x)
        return x

    def __getitem__(self, i): return self._order[i]
    def __len__(self): return len(self._order)
    def __iter__(self): return iter(self._order)

    def __repr__(self):
        lines = [f"({i}): " + repr(m).replace("\n", "\n  ") for i, m in enumerate(self._order)]
        return "Sequential(\n  " + "\n  ".join(lines) + "\n)" if lines else "Sequential()"


class ModuleList(Module):
    "A list of sub-modules, registered as `0`, `1`, …"
    def __init__(self, modules=()):
        super().__init__()
        for m in modules: self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules: self.append(m)
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __len__(self): return len(self._modules)
    def __iter__(self): return iter(self._modules.values())

# %%
def test_containers():
    manual_seed(0)
    net = Sequential(Linear(3, 4), Linear(4, 2))
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = Tensor(np.ones((5, 3)))
    assert np.allclose(net(x).data, net[1](net[0](x)).data)
    blocks = ModuleList([Linear(2, 2) for _ in range(3)])
    assert len(blocks) == 3 and [n for n, _ in blocks.named_parameters()][-1] == "2.bias"
    with pytest.raises(TypeError, match="ModuleList holds Modules, got int"):
        blocks.append(3)
    assert repr(net).startswith("Sequential(\n  (0): Linear(in_features=3")

# %% [markdown]
# ## Saving and loading
#
# `save(obj, path)` writes a state dict — or any nest of dicts and lists holding arrays,
# tensors, numbers and strings, such as a training checkpoint — to one `.npz` file: the
# arrays as NumPy's own format, the structure as a small JSON document beside them. No
# pickle is involved, so loading a file never runs code.
#
# The write is atomic: the file is written under a temporary name in the same folder and
# renamed over the target only when complete, so a crash mid-write leaves the previous file
# intact. `load` checks the format marker and raises a clear error for a truncated or
# foreign file instead of returning half a model.
#
# `load` is *total*: any sequence of bytes gives back what `save` wrote or a `CheckpointError`
# that names the problem, never another exception. It reads the archive itself instead of
# trusting `np.load`: each array's header (shape and dtype) is checked against the bytes the
# file really holds before memory is allocated, so a header that declares a 447 GiB array
# in a 1 MB file is refused without allocating it; object (pickled) arrays are never read;
# every metadata node must be one of the few that `save` writes, nested at most `_MAX_DEPTH`
# levels; and zip's CRC-32 catches flipped bits in the data.

# %%
#| export
_FORMAT = "tinytorch-checkpoint-v1"
_MAX_DEPTH = 100                  # deeper metadata is not something save() writes


class CheckpointError(ValueError):
    "A file is not a complete tinytorch checkpoint."


def _flatten(obj, arrays):
    "Replace arrays in a nested structure by references into `arrays`."
    if isinstance(obj, Tensor): obj = obj.data
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {"__array__": len(arrays) - 1}
    if isinstance(obj, np.generic): return obj.item()
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            return {"__dict_items__": [[_flatten(k, arrays), _flatten(v, arrays)] for k, v in obj.items()]}
        return {"__dict__": {k: _flatten(v, arrays) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_flatten(v, arrays) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)): return obj
    raise TypeError(f"save: cannot store a value of type {type(obj).__name__}")


def _unflatten(node, arrays, where="tree", depth=0):
    "Rebuild what `_flatten` stored; CheckpointError (naming the node) for anything it never writes."
    if node is None or isinstance(node, (bool, int, float, str)): return node
    if depth > _MAX_DEPTH: raise CheckpointError(f"{where} is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"{where} is a {type(node).__name__} of length {len(node)}, not a stored value")
    (kind, value), = node.items()
    if kind == "__array__":
        if type(value) is not int or f"a{value}" not in arrays:
            raise CheckpointError(f"{where} refers to array {value!r}, which the file does not hold")
        return arrays[f"a{value}"]
    if kind in ("__list__", "__tuple__", "__dict_items__") and not isinstance(value, list):
        raise CheckpointError(f"{where}: {kind} holds a {type(value).__name__}, not a list")
    if kind == "__list__": return [_unflatten(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if kind == "__tuple__": return tuple(_unflatten(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    if kind == "__dict__":
        if not isinstance(value, dict): raise CheckpointError(f"{where}: __dict__ holds a {type(value).__name__}, not an object")
        return OrderedDict((k, _unflatten(v, arrays, f"{where}.{k}", depth + 1)) for k, v in value.items())
    if kind == "__dict_items__":
        out = OrderedDict()
        for i, pair in enumerate(value):
            if not isinstance(pair, list) or len(pair) != 2:
                raise CheckpointError(f"{where}[{i}] is not a [key, value] pair")
            key = _unflatten(pair[0], arrays, f"{where}[{i}].key", depth + 1)
            try: hash(key)
            except TypeError: raise CheckpointError(f"{where}[{i}]: a key of type {type(key).__name__} cannot be a dict key") from None
            out[key] = _unflatten(pair[1], arrays, f"{where}[{key!r}]", depth + 1)
        return out
    raise CheckpointError(f"{where} is an unknown node {kind!r}")


def save(obj, path):
    "Write a state dict (or a nest of dicts/lists of arrays, numbers, strings) to `path` atomically."
    path = Path(path)
    arrays = []
    meta = json.dumps({"format": _FORMAT, "tree": _flatten(obj, arrays)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0); os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)                 # mkstemp makes it private; a checkpoint is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8),
                     **{f"a{i}": a for i, a in enumerate(arrays)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp): os.unlink(tmp)
        raise
    return path


@functools.lru_cache(maxsize=512)
def _npy_header(raw):
    "(shape, fortran_order, dtype) of a .npy header, parsed by NumPy (cached: checkpoints repeat their headers)."
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    header = read(f)
    if f.read(): raise ValueError("the .npy header is shorter than its declared length")
    return header


def _read_array(zf, info, budget):
    "One .npy member, its header checked against the member's size before any memory is allocated."
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"member {info.filename} is compressed; save() stores arrays uncompressed")
    with zf.open(info) as f:
        magic = f.read(8)
        if magic[:6] != b"\x93NUMPY" or magic[6:] not in (b"\x01\x00", b"\x02\x00"):
            raise CheckpointError(f"member {info.filename} is not a .npy array of version 1 or 2")
        size = f.read(2 if magic[6] == 1 else 4)
        header = f.read(min(int.from_bytes(size, "little"), 1 << 16))
        shape, fortran, dtype = _npy_header(magic + size + header)
        if dtype.hasobject:
            raise CheckpointError(f"member {info.filename} holds pickled (object) data, which is never loaded")
        if dtype.kind not in "biuf" or dtype.subdtype is not None or dtype.names:
            raise CheckpointError(f"member {info.filename} has dtype {dtype}; a checkpoint holds only numbers")
        count = 1
        for n in shape:
            if n < 0: raise CheckpointError(f"member {info.filename} declares a negative dimension in shape {shape}")
            count *= int(n)
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - f.tell() or nbytes > budget:
            raise CheckpointError(f"member {info.filename} declares shape {shape} ({nbytes:,} bytes), but holds "
                                  f"{info.file_size - f.tell():,} bytes (truncated or corrupt?)")
        flat = np.empty(count, dtype=dtype)
        view, got = flat.view(np.uint8), 0
        while got < nbytes:
            chunk = f.read(min(nbytes - got, 1 << 24))
            if not chunk: raise CheckpointError(f"member {info.filename} ends after {got:,} of {nbytes:,} bytes")
            view[got:got + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            got += len(chunk)
        f.read()                                     # reach the end: zipfile checks the CRC-32 there
    return flat.reshape(shape, order="F" if fortran else "C"), nbytes


def load(path):
    "Read what `save` wrote; raise CheckpointError for a truncated, corrupt or foreign file (never run code)."
    path = Path(path)
    if not path.exists(): raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file(): raise CheckpointError(f"{path} is not a file")
    with open(path, "rb") as f: head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path} is a single NumPy array (.npy), not a tinytorch checkpoint (the .npz "
                              "archive that save() writes)")
    if not head.startswith(b"PK"):
        kind = "a text file" if head and all(32 <= c < 127 or c in b"\t\r\n" for c in head) else "not a zip archive"
        raise CheckpointError(f"{path} is not a tinytorch checkpoint: it is {kind}, not the .npz archive that save() writes")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names): raise CheckpointError(f"{path} has duplicate archive members")
            if "__meta__.npy" not in names: raise CheckpointError(f"{path} is not a tinytorch checkpoint (no metadata)")
            budget = path.stat().st_size                 # no array may claim more bytes than the file has
            arrays, meta = {}, None
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name != "__meta__" and not (name and name[:1] == "a" and name[1:].isdigit()):
                    raise CheckpointError(f"{path} has an unexpected member {info.filename!r}")
                arr, nbytes = _read_array(zf, info, budget)
                budget -= nbytes
                if name == "__meta__":
                    if arr.dtype != np.uint8 or arr.ndim != 1: raise CheckpointError(f"{path}: the metadata is not bytes")
                    meta = json.loads(arr.tobytes().decode())
                else:
                    arrays[name] = arr
    except CheckpointError as e:
        msg = str(e)
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the metadata is nested too deeply") from None
    except Exception as e:                           # zipfile, the .npy header parser, JSON, UTF-8: all mean corrupt
        raise CheckpointError(f"{path} is not a readable tinytorch checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} has unknown format {fmt!r}; expected {_FORMAT}")
    if "tree" not in meta: raise CheckpointError(f"{path} is incomplete: its metadata has no tree")
    try:
        return _unflatten(meta["tree"], arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the metadata is nested too deeply") from None

# %%
def test_save_load_round_trip(tmp_path):
    manual_seed(0)
    net = Sequential(Linear(3, 4), Linear(4, 2))
    path = save(net.state_dict(), tmp_path / "net.npz")
    sd = load(path)
    assert list(sd) == list(net.state_dict()) and all(np.array_equal(sd[k], v) for k, v in net.state_dict().items())
    other = Sequential(Linear(3, 4), Linear(4, 2))
    other.load_state_dict(sd)
    x = Tensor(np.ones((1, 3)))
    assert np.array_equal(other(x).data, net(x).data)
    nested = {"step": 3, "lr": 0.5, "name": "gpt", "opt": {"state": {0: {"m": np.ones(2)}}}, "hist": [1.0, 2.0]}
    back = load(save(nested, tmp_path / "ck.npz"))
    assert back["step"] == 3 and back["opt"]["state"][0]["m"].tolist() == [1.0, 1.0] and back["hist"] == [1.0, 2.0]

def test_load_rejects_truncated_and_foreign_files(tmp_path):
    path = save({"w": np.ones(1000)}, tmp_path / "a.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="not a tinytorch checkpoint"):
        load(tmp_path / "foreign.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="it is a text file"):
        load(tmp_path / "text.npz")
    np.save(tmp_path / "plain.npy", np.ones(3))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(CheckpointError, match=r"a single NumPy array \(.npy\)"):
        load(tmp_path / "plain.npz")
    np.savez(tmp_path / "objects.npz", __meta__=np.frombuffer(b"{}", dtype=np.uint8), a0=np.array([{}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        load(tmp_path / "objects.npz")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []   # no temp files left

# %%
if __name__ == "__main__":
    try:
        manual_seed(0)
        mlp = Sequential(Linear(2, 8), Linear(8, 1))
        print(mlp)
        print("parameters:", mlp.num_parameters())
    except NotImplementedError as e:
        print("skipped until the stubs above are written:", e)

# %% [markdown]
# ## Experiments to try
#
# 1. Build `Linear(100, 10)` and print the largest absolute weight for several seeds: it stays
#    just below 1/sqrt(100) = 0.1, the bound of PyTorch's initialisation.
# 2. Tie two layers' weights (`b.weight = a.weight`) and compare `num_parameters()` with
#    `len(state_dict())`: the tied weight is counted once but saved under both names.
# 3. Apply `Dropout(0.5)` to `ones((1000,))` in training mode and in `eval()` mode: in training
#    about half the values are 0 and the rest 2, so the mean stays near 1; in eval the input
#    comes back unchanged.

# %% [markdown]
# ## Run this module's tests
#
# The cell below runs every test of this notebook in the kernel and prints PASS, FAIL (with
# the reason) or TODO per test; `tito module complete 5` runs them from the shell.

# %%
from tito.notebook import run_tests

if __name__ == "__main__":
    run_tests()
