"""Feedback inside a module notebook: run a group of tests, compare arrays.

A module notebook calls these from its non-exported cells, right after a group
of functions the learner writes::

    from tito.notebook import run_tests, assert_close

    def test_add_matches_numpy():
        a, b = Tensor([[1.0, 2.0]]), Tensor([10.0])
        assert_close(add(a, b), a.data + b.data, inputs={"a": a, "b": b})

    run_tests(test_add_matches_numpy, "test_mul*")

``run_tests`` prints one line per test and a total, and never raises on a
failing test, so running the notebook top to bottom goes on to the next cell:

    PASS  test_add_matches_numpy
    TODO  test_mul_broadcasts: not implemented yet: Module 1 (tensor): implement mul ...
    2 tests: 1 passed, 1 not implemented yet.

Where ``run_tests`` runs the tests:

* in a notebook kernel (Jupyter, IPython, anything with ``get_ipython()``):
  always -- this is what it is for;
* as a plain script (``python modules/01_tensor/tensor.py``, which CI does): it
  prints one line naming the tests and runs nothing, because pytest runs the
  same ``test_*`` functions already (``tito module test N``); set the
  environment variable ``TITO_RUN_TESTS=1`` to run them there too;
* when the notebook is imported (pytest collecting its ``test_*`` functions, or
  any ``import``): nothing at all.

``TITO_RUN_TESTS=0`` turns it off everywhere. The ``tinytorch`` package never
imports this module: it is used only by the notebooks' test cells.
"""
from __future__ import annotations

import contextlib
import fnmatch
import inspect
import itertools
import linecache
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["run_tests", "assert_close", "TestResult", "Report", "in_notebook"]

#: fixtures run_tests provides itself; any other argument makes a test "needs pytest"
SUPPORTED_FIXTURES = ("tmp_path", "monkeypatch")
#: at most this many lines of a failure's message are shown under its summary line
DETAIL_LINES = 8
PASS, FAIL, TODO, SKIP = "PASS", "FAIL", "TODO", "SKIP"


# ----------------------------------------------------------------- context ----
def in_notebook() -> bool:
    """True inside an IPython shell or Jupyter kernel."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        return ip.get_ipython() is not None
    except Exception:
        return False


def _mode(caller_globals: Mapping) -> str:
    """``"run"``, ``"announce"`` (a plain script) or ``"off"`` (imported, or disabled)."""
    flag = os.environ.get("TITO_RUN_TESTS", "").strip()
    if flag == "0":
        return "off"
    if caller_globals.get("__name__") != "__main__":
        return "off"                      # imported: pytest collection, or `import tensor`
    if flag == "1" or in_notebook():
        return "run"
    return "announce"


def _module_number(caller_globals: Mapping) -> str:
    """The module number, from the notebook's folder ``NN_name`` (a script's ``__file__``, or the
    kernel's working folder, which Jupyter sets to the notebook's); ``N`` when unknown."""
    for d in (Path(caller_globals["__file__"]).resolve().parent if caller_globals.get("__file__") else None,
              Path.cwd()):
        m = re.match(r"^(\d\d)_[A-Za-z]", d.name) if d is not None else None
        if m:
            return str(int(m.group(1)))
    return "N"


# ----------------------------------------------------------------- results ----
@dataclass
class TestResult:
    """The outcome of one test (one parameter set of a parametrized test)."""
    __test__ = False                      # not a pytest test class
    name: str
    status: str                           # PASS, FAIL, TODO (NotImplementedError) or SKIP
    reason: str = ""                      # the one-line reason (empty for PASS)
    detail: list[str] = field(default_factory=list)   # further lines of the failure message
    seconds: float = 0.0

    def line(self) -> str:
        s = f"{self.status}  {self.name}"
        return f"{s}: {self.reason}" if self.reason else s


@dataclass
class Report:
    """What ``run_tests`` ran. Truthy when every test passed (skips count as passed)."""
    results: list[TestResult] = field(default_factory=list)
    ran: bool = True                      # False when run_tests did not run (script or import)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def passed(self) -> int:
        return self.count(PASS)

    @property
    def failed(self) -> int:
        return self.count(FAIL)

    @property
    def not_implemented(self) -> int:
        return self.count(TODO)

    @property
    def ok(self) -> bool:
        return self.ran and not self.failed and not self.not_implemented

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        n = len(self.results)
        parts = [f"{self.passed} passed"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.not_implemented:
            parts.append(f"{self.not_implemented} not implemented yet")
        if self.count(SKIP):
            parts.append(f"{self.count(SKIP)} skipped")
        return f"{n} test{'s' if n != 1 else ''}: {', '.join(parts)}."

    def __repr__(self) -> str:
        return f"<Report {self.summary()}>" if self.ran else "<Report: not run>"

    def _ipython_display_(self):
        """The summary is printed already; a trailing ``run_tests(...)`` shows nothing more."""


# -------------------------------------------------------------- collection ----
def _marks(fn, name: str) -> list:
    return [m for m in getattr(fn, "pytestmark", []) if getattr(m, "name", None) == name]


def _param_sets(fn) -> list[tuple[str, dict]]:
    """``(id, kwargs)`` for each parameter set of ``@pytest.mark.parametrize`` (one empty set if none)."""
    axes = []
    for mark in reversed(_marks(fn, "parametrize")):   # pytest applies the nearest decorator first
        argnames, argvalues = mark.args[0], list(mark.args[1])
        names = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        ids = mark.kwargs.get("ids")
        axis = []
        for i, v in enumerate(argvalues):
            pid = None
            if hasattr(v, "values") and hasattr(v, "marks") and hasattr(v, "id"):   # pytest.param(...)
                pid, v = v.id, v.values
                v = v if len(names) > 1 else v[0]
            vals = tuple(v) if len(names) > 1 else (v,)
            if pid is None and isinstance(ids, (list, tuple)) and i < len(ids):
                pid = str(ids[i])
            if pid is None:
                pid = "-".join(x if isinstance(x, str) else (repr(x) if isinstance(x, (int, float, bool))
                                                              else f"{n}{i}") for n, x in zip(names, vals))
            axis.append((pid, dict(zip(names, vals))))
        axes.append(axis)
    if not axes:
        return [("", {})]
    out = []
    for combo in itertools.product(*axes):
        kw = {}
        for _, d in combo:
            kw.update(d)
        out.append(("-".join(p for p, _ in combo), kw))
    return out


def _collect(items, caller_globals: Mapping) -> list:
    """Test functions, in order, without repeats; a pattern that matches nothing stays a string."""
    tests: list = []
    for it in items or ("test_*",):
        if callable(it):
            tests.append(it)
        elif isinstance(it, str):
            found = [v for k, v in caller_globals.items()
                     if fnmatch.fnmatchcase(k, it) and callable(v) and not isinstance(v, type)]
            tests += found or [it]
        else:
            raise TypeError(f"run_tests takes test functions or name patterns such as 'test_add*', "
                            f"not {type(it).__name__}")
    return list(dict.fromkeys(tests))


# ---------------------------------------------------------------- running ----
def _skip_reason(fn) -> str | None:
    for m in _marks(fn, "skip"):
        return m.kwargs.get("reason") or (m.args[0] if m.args else "marked skip")
    for m in _marks(fn, "skipif"):
        cond = m.args[0] if m.args else m.kwargs.get("condition", False)
        if cond and not isinstance(cond, str):
            return m.kwargs.get("reason", "skipif condition is true")
    return None


def _first_line(text: str) -> str:
    lines = [l for l in str(text).strip().splitlines() if l.strip()]
    return lines[0].strip() if lines else ""


def _frames(exc: BaseException, fn):
    """The traceback's innermost frame in the test function, and the innermost frame of all
    (not counting this module's own, e.g. ``assert_close`` raising)."""
    code = getattr(fn, "__code__", None)
    tb, mine, last = exc.__traceback__, None, None
    while tb is not None:
        if tb.tb_frame.f_code is code:
            mine = tb
        if tb.tb_frame.f_code.co_filename != __file__:          # not assert_close's own raise
            last = tb
        tb = tb.tb_next
    return mine or last, last


def _at(tb, fn=None) -> str:
    if tb is None:
        return ""
    f = tb.tb_frame
    src = linecache.getline(f.f_code.co_filename, tb.tb_lineno, f.f_globals).strip()
    who = "" if fn is not None and f.f_code is getattr(fn, "__code__", None) else f"{f.f_code.co_name}, "
    return f"{who}line {tb.tb_lineno}: {src}" if src else f"{who}line {tb.tb_lineno}"


def _values(tb) -> list[str]:
    """The test's local values named on the failing line (for a bare ``assert``)."""
    if tb is None:
        return []
    f = tb.tb_frame
    src = linecache.getline(f.f_code.co_filename, tb.tb_lineno, f.f_globals)
    out = []
    for n in dict.fromkeys(re.findall(r"\b[A-Za-z_]\w*\b", src)):
        if n in f.f_locals and not callable(f.f_locals[n]) and not inspect.ismodule(f.f_locals[n]):
            out.append(f"{n} = {_brief(f.f_locals[n])}")
    return out[:4]


def _outcome(exc: BaseException, fn) -> tuple[str, str, list[str]]:
    name = type(exc).__name__
    mine, last = _frames(exc, fn)
    if isinstance(exc, NotImplementedError):
        return TODO, f"not implemented yet: {_first_line(exc) or _at(last)}", []
    if name == "Skipped":                                      # pytest.skip(...) / importorskip
        return SKIP, _first_line(getattr(exc, "msg", exc)) or "skipped", []
    lines = [l.rstrip() for l in str(exc).strip().splitlines() if l.strip()]
    where = [f"at {_at(mine, fn)}"]
    if last is not mine:
        where.append(f"raised in {_at(last)}")
    if isinstance(exc, AssertionError) and not lines:
        return FAIL, f"assertion failed at {_at(mine, fn)}", _values(mine)
    head = lines[0] if isinstance(exc, AssertionError) else (f"{name}: {lines[0]}" if lines else name)
    return FAIL, head, (where + lines[1:])[:DETAIL_LINES]


def _run_one(fn, name: str, kwargs: dict, number: str = "N") -> TestResult:
    params = list(inspect.signature(fn).parameters)
    unknown = [p for p in params if p not in kwargs and p not in SUPPORTED_FIXTURES]
    if unknown:
        return TestResult(name, SKIP, f"needs the pytest fixture {', '.join(unknown)}; run it with pytest "
                                      f"(tito module test {number} -k {fn.__name__})")
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if "tmp_path" in params:
            kwargs = {**kwargs, "tmp_path": Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=f"{fn.__name__[:40]}-")))}
        if "monkeypatch" in params:
            import pytest
            kwargs = {**kwargs, "monkeypatch": stack.enter_context(pytest.MonkeyPatch.context())}
        try:
            fn(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as e:                             # SystemExit, pytest's outcomes, anything
            status, reason, detail = _outcome(e, fn)
            return TestResult(name, status, reason, detail, time.perf_counter() - t0)
    return TestResult(name, PASS, "", [], time.perf_counter() - t0)


def run_tests(*tests, quiet: bool = False, _globals: Mapping | None = None) -> Report:
    """Run a group of tests in the notebook and print one line per test and a total.

    ``tests`` are test functions or glob patterns over the calling notebook's
    names (``"test_matmul*"``); with none, every ``test_*`` defined so far runs.
    Each test prints ``PASS``, ``FAIL`` with the one-line reason (the
    assertion's message, or the failing line), ``TODO`` for a
    ``NotImplementedError`` ("not implemented yet: <what>") or ``SKIP``.
    A failure's further message lines (e.g. ``assert_close``'s worst index and
    inputs) follow, indented. ``@pytest.mark.parametrize`` runs every parameter
    set; the ``tmp_path`` and ``monkeypatch`` fixtures are provided (a fresh
    folder, undone patches); a test needing any other fixture is skipped with a
    note to run it under pytest. ``pytest.mark.skip``/``skipif`` are honoured.

    Never raises for a failing test (a notebook run top to bottom goes on);
    only a KeyboardInterrupt (the kernel's stop button) stops it. Returns a
    ``Report`` (truthy when everything passed). Runs only in a notebook kernel;
    see the module docstring for scripts, imports and ``TITO_RUN_TESTS``.
    """
    g = _globals if _globals is not None else sys._getframe(1).f_globals
    mode = _mode(g)
    if mode == "off":
        return Report(ran=False)
    fns = _collect(tests, g)
    number = _module_number(g)
    if mode == "announce":
        if not quiet:
            names = ", ".join(f if isinstance(f, str) else getattr(f, "__name__", "?") for f in fns)
            print(f"run_tests: not run outside a notebook ({names}); pytest runs them: "
                  f"tito module test {number} (or set TITO_RUN_TESTS=1)")
        return Report(ran=False)
    report = Report()
    for fn in fns:
        if isinstance(fn, str):
            res = TestResult(fn, FAIL, f"no test function matches {fn!r}; define it in a cell above this one")
            report.results.append(res)
            if not quiet:
                print(res.line())
            continue
        skip = _skip_reason(fn)
        for pid, kwargs in _param_sets(fn):
            name = f"{fn.__name__}[{pid}]" if pid else fn.__name__
            res = TestResult(name, SKIP, skip) if skip else _run_one(fn, name, dict(kwargs), number)
            report.results.append(res)
            if not quiet:
                print(res.line())
                for d in res.detail:
                    print(f"      {d}")
                sys.stdout.flush()
    if not quiet:
        print(report.summary())
    return report


# ---------------------------------------------------------------- compare ----
def _as_array(x, what: str) -> np.ndarray:
    """A NumPy array from a tinytorch Tensor (``.data``), a torch tensor, a list or a number."""
    if type(x).__module__.split(".")[0] == "torch":           # torch.Tensor
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray) and isinstance(getattr(x, "data", None), np.ndarray):
        x = x.data                                              # tinytorch.Tensor, Parameter
    try:
        return np.asarray(x)
    except Exception as e:
        raise TypeError(f"assert_close: cannot read {what} ({type(x).__name__}) as an array: {e}") from None


def _brief(x, width: int = 70) -> str:
    """A short, one-line description of a value: its type, shape and first numbers."""
    kind = type(x).__name__
    try:
        a = _as_array(x, "input")
    except TypeError:
        r = repr(x)
        return r if len(r) <= width else r[: width - 3] + "..."
    if a.dtype == object:
        r = repr(x)
        return r if len(r) <= width else r[: width - 3] + "..."
    if a.ndim == 0:
        return repr(x) if isinstance(x, (int, float, bool, str, np.generic)) else f"{kind} {a.item()!r}"
    body = np.array2string(a.ravel()[:8], precision=4, separator=", ", max_line_width=10_000)
    if a.size > 8:
        body = body[:-1] + ", ...]"
    s = f"{kind} shape {a.shape} {a.dtype}: {body}"
    return s if len(s) <= width + 40 else s[: width + 37] + "..."


def _fmt(v) -> str:
    v = v.item() if hasattr(v, "item") else v
    return f"{v:.7g}" if isinstance(v, float) else repr(v)


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-8, *,
                 inputs: Mapping[str, Any] | None = None, name: str = "value") -> None:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` everywhere.

    ``actual`` and ``expected`` may be tinytorch Tensors, torch tensors, NumPy
    arrays, lists or numbers. Shapes must be equal (nothing is broadcast). NaN
    matches only NaN; infinities must match exactly. On failure the
    AssertionError says, in its first line, how many values differ, the worst
    index and actual vs expected there, the error and the tolerance; the next
    lines give the shapes and dtypes and briefly each of ``inputs`` (a mapping
    of names to the values the test fed in). ``name`` names the compared value.
    """
    a = _as_array(actual, f"the actual {name}")
    e = _as_array(expected, f"the expected {name}")
    lines_in = [f"inputs: {k} = {_brief(v)}" for k, v in (inputs or {}).items()]
    if a.shape != e.shape:
        raise AssertionError("\n".join([
            f"{name}: shape {a.shape}, expected shape {e.shape}",
            f"actual: {_brief(actual)}", f"expected: {_brief(expected)}", *lines_in]))
    try:
        af, ef = a.astype(np.float64), e.astype(np.float64)
    except (TypeError, ValueError):
        if np.array_equal(a, e):
            return
        raise AssertionError("\n".join([f"{name}: {_brief(actual)} != expected {_brief(expected)}", *lines_in]))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(af - ef)
        tol = atol + rtol * np.abs(ef)
        inf = np.isinf(af) | np.isinf(ef)
        ok = np.where(inf, af == ef, (err <= tol) | (np.isnan(af) & np.isnan(ef)))
    if ok.all():
        return
    bad = ~ok
    with np.errstate(invalid="ignore"):
        excess = np.where(bad, np.nan_to_num(err - tol, nan=np.inf, posinf=np.inf), -np.inf)
    idx = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    where = f" at index {tuple(int(i) for i in idx)}" if a.ndim else ""
    n_bad, n = int(bad.sum()), a.size
    count = f"{n_bad} of {n} values differ; worst" if n > 1 else "differs"
    head = (f"{name}: {count}{where}: actual {_fmt(af[idx])}, expected {_fmt(ef[idx])} "
            f"(error {_fmt(err[idx])} > tolerance {_fmt(tol[idx])})")
    raise AssertionError("\n".join([
        head,
        f"shape {a.shape}, dtypes actual {a.dtype} / expected {e.dtype}; tolerance = atol {atol:g} + "
        f"rtol {rtol:g} * |expected|",
        *lines_in]))
