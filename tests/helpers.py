"""Helpers for the tito tests: small throwaway TinyTorch projects in tmp dirs.

A fixture project has the real settings.ini, pyproject.toml, conftest.py and
jupytext.toml, a minimal hand-written tinytorch/__init__.py, and two tiny module
notebooks (01_tensor -> core.tensor, 02_grad -> core.grad) with solution
blocks, notebook tests and package tests (tests/test_01_*.py, tests/test_02_*.py).
"""
import shutil
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEADER = """\
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
"""

TENSOR_NB = HEADER + '''
# %% [markdown]
# # 01 Tensor
# > A tiny stand-in for the tensor module.

# %%
#| default_exp core.tensor

# %%
#| export
import numpy as np

def add(a, b):
    "Elementwise sum of two arrays."
    ### BEGIN SOLUTION
    return np.add(a, b)
    ### END SOLUTION

# %%
#| export
class Box:
    "Holds a value."
    def __init__(self, value):
        self.value = value

    def scale(self, k):
        "Multiply the value by k."
        # Hint: multiply, do not add
        ### BEGIN SOLUTION
        return Box(self.value * k)
        ### END SOLUTION

# %%
def test_add():
    assert add(1, 2) == 3

def test_scale():
    assert Box(2).scale(3).value == 6
'''

GRAD_NB = HEADER + '''
# %% [markdown]
# # 02 Grad

# %%
#| default_exp core.grad

# %%
#| export
from tinytorch.core.tensor import add

def square_grad(x):
    "Derivative of x**2 at x."
    ### BEGIN SOLUTION
    return add(x, x)
    ### END SOLUTION

# %%
def test_square_grad():
    assert square_grad(3.0) == 6.0
'''

PKG_TEST_01 = '''
from tinytorch.core.tensor import Box, add

def test_add_package():
    assert add(2, 2) == 4

def test_box_package():
    assert Box(5).scale(2).value == 10
'''

PKG_TEST_02 = '''
from tinytorch.core.grad import square_grad

def test_square_grad_matches_finite_difference():
    x, h = 1.5, 1e-6
    fd = ((x + h) ** 2 - (x - h) ** 2) / (2 * h)
    assert abs(square_grad(x) - fd) < 1e-5
'''


def write_project(root: Path, notebooks=None, package_tests=True) -> Path:
    """Create a fixture project at ``root``; ``notebooks`` maps 'NN_name' to text."""
    root.mkdir(parents=True, exist_ok=True)
    for f in ("settings.ini", "pyproject.toml", "conftest.py", "jupytext.toml"):
        if (REPO / f).exists():
            shutil.copy(REPO / f, root / f)
    (root / "tinytorch").mkdir(exist_ok=True)
    (root / "tinytorch" / "__init__.py").write_text('__version__ = "0.1.0"\n', encoding="utf-8")
    notebooks = {"01_tensor": TENSOR_NB, "02_grad": GRAD_NB} if notebooks is None else notebooks
    for slug, text in notebooks.items():
        d = root / "modules" / slug
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{slug.split('_', 1)[1]}.py").write_text(text, encoding="utf-8")
    (root / "modules").mkdir(exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    if package_tests:
        (root / "tests" / "test_01_tensor_pkg.py").write_text(PKG_TEST_01, encoding="utf-8")
        (root / "tests" / "test_02_grad_pkg.py").write_text(PKG_TEST_02, encoding="utf-8")
    return root


def tree_bytes(top: Path) -> dict:
    """Every file under ``top`` (but caches) as bytes: to prove a tree is byte-identical."""
    return {p.relative_to(top).as_posix(): p.read_bytes() for p in sorted(top.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}



def dedent(s: str) -> str:
    return textwrap.dedent(s)
