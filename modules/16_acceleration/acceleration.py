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
# # 16 Acceleration
# > Fused kernels with hand-written backward passes, each equal to its textbook twin, switched on by one call.
#
# The textbook functions of modules 01-15 build every idea from earlier ops, and autograd
# derives their backward passes. That is the clearest way to write them and a slow way to
# run them: a LayerNorm written with `mean`, `-`, `*` and `sqrt` is a dozen graph nodes,
# each allocating its own temporary arrays, and its backward pass walks all of them again.
# A *fused kernel* computes the same function in a few NumPy passes and states its
# derivative directly, as one op in the derivative table.
#
# Each kernel here has the signature of the textbook function it replaces and is tested
# equal to it: values and every gradient, in float64 (to 1e-10 relative) and float32.
# `enable()` registers them all with module 01's `register_kernel`, and the package's
# `tinytorch/__init__.py` calls it once, visibly. `disable()` (or `TINYTORCH_KERNELS=textbook`
# in the environment) runs the textbook code again.

# %%
#| default_exp accel

# %%
#| export
import contextlib
import math

import numpy as np
from tinytorch.core.tensor import Tensor, record, register_kernel, KERNELS, _wrap
from tinytorch.core.autograd import derivative

# %% [markdown]
# ## Scalar ops and in-place updates

# %%
#| export
SCALAR_KERNELS = {}

# %% [markdown]
# ## Softmax, GELU, linear layers and cross-entropy

# %%
#| export
ELEMENTWISE_KERNELS = {}

# %% [markdown]
# ## Attention

# %%
#| export
ATTENTION_KERNELS = {}

# %% [markdown]
# ## LayerNorm, the GPT-2 MLP, RMSNorm and SwiGLU

# %%
#| export
NORM_KERNELS = {}

# %% [markdown]
# ## Switching the kernels on
#
# `FUSED_KERNELS` maps each replaceable textbook function's name to its kernel. `enable()`
# registers all of them, `disable()` removes them, and `textbook()` is a context in which
# the textbook code runs (the tests use it to compare the two).

# %%
#| export
FUSED_KERNELS = {**SCALAR_KERNELS, **ELEMENTWISE_KERNELS, **ATTENTION_KERNELS, **NORM_KERNELS}


def enable():
    "Register every fused kernel of this chapter in place of its textbook twin."
    for name, kernel in FUSED_KERNELS.items():
        register_kernel(name, kernel)


def disable():
    "Remove this chapter's kernels: the textbook functions run again."
    for name in FUSED_KERNELS:
        register_kernel(name, None)


def enabled():
    "True if every kernel of this chapter is registered."
    return all(KERNELS.get(name) is kernel for name, kernel in FUSED_KERNELS.items())


@contextlib.contextmanager
def textbook():
    "A context in which the textbook functions run; the previous registrations come back afterwards."
    saved = {name: KERNELS[name] for name in FUSED_KERNELS if name in KERNELS}
    disable()
    try:
        yield
    finally:
        for name, kernel in saved.items():
            register_kernel(name, kernel)

# %%
def test_enable_disable_and_textbook_context():
    was = enabled()
    try:
        enable()
        assert enabled()
        with textbook():
            assert not any(name in KERNELS for name in FUSED_KERNELS)
        assert enabled()
        disable()
        assert not any(name in KERNELS for name in FUSED_KERNELS)
    finally:
        (enable if was else disable)()
