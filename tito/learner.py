"""The learner's journey: start, complete and reset a module.

* ``workspace/NN_name/name.py`` is the learner's copy of a module notebook
  (git-ignored). ``start`` writes it with every ``### BEGIN SOLUTION`` ...
  ``### END SOLUTION`` block replaced by ``raise NotImplementedError(...)``.
* ``.tito/progress.json`` records which modules were started and completed
  (git-ignored, written atomically).
* ``workspace/backups/NN_name/`` keeps a timestamped copy of the learner's file
  before anything overwrites it. Nothing a learner wrote is ever lost.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .export import ExportError, _atomic_write, _import_jupytext, export, read_notebook, check_notebook
from .journal import LockBusy, transaction
from .project import Module, Project
from .testing import FAST, NO_TESTS, TimedOut, run_command, run_pytest

__all__ = ["LearnerError", "Progress", "make_stub", "start", "complete", "reset", "package_sources",
           "module_state", "backup", "sync_paired_ipynb", "CompleteResult", "next_step", "module_digests",
           "DEFAULT_TIMEOUT", "UNCHECKED", "KERNELS_FILE", "accel_module", "wanted_kernels", "sync_kernels"]

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)###\s*BEGIN SOLUTION\b.*$")
END_RE = re.compile(r"^[ \t]*###\s*END SOLUTION\b.*$")
HINT_RE = re.compile(r"^[ \t]*#\s*hint\s*:\s*(?P<hint>.+?)\s*$", re.IGNORECASE)
DEFAULT_HINT = "read the docstring and the tests of this module"

COMPLETED, IN_PROGRESS, NOT_STARTED = "completed", "in progress", "not started"
#: completed, but tinytorch/ changed since the tests last passed (e.g. a later `tito export`)
UNCHECKED = "completed, not re-checked"
#: seconds one `complete` test run may take before it is stopped (``--timeout``)
DEFAULT_TIMEOUT = 300.0


class LearnerError(Exception):
    """A learner command could not do what was asked; the message says why and what to do."""


# ---------------------------------------------------------------- progress ----
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, text.encode("utf-8"))


class Progress:
    """The learner's progress, one small JSON file: ``.tito/progress.json``."""

    def __init__(self, project: Project):
        self.project = project
        self.path = project.progress_file
        self.data = {"version": 1, "modules": {}}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise LearnerError(f"The progress file {project.rel(self.path)} is unreadable ({e}). "
                                   "Fix or delete it; your notebooks in workspace/ are not affected.") from None
            if isinstance(data, dict) and isinstance(data.get("modules"), dict):
                self.data = data

    def entry(self, mod: Module) -> dict:
        return self.data["modules"].get(mod.slug, {})

    def completed(self, mod: Module) -> bool:
        return "completed" in self.entry(mod)

    def mark(self, mod: Module, **fields) -> None:
        e = self.data["modules"].setdefault(mod.slug, {})
        e.update(fields)

    def unmark(self, mod: Module, key: str) -> None:
        e = self.data["modules"].get(mod.slug)
        if e:
            e.pop(key, None)

    def save(self) -> None:
        _atomic_write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------- kernel choice ----
#: A file beside ``tinytorch/__init__.py`` that picks the kernels when ``TINYTORCH_KERNELS`` is not set.
#: While a learner has not completed the acceleration module (18), its fused kernels, which replace
#: the textbook functions of earlier modules, would run instead of the learner's own code; so from
#: ``tito module start`` on this file says ``textbook``, and ``tito module complete 18`` removes it.
KERNELS_FILE = "_kernels.txt"
KERNELS_TEXT = ("textbook\n"
                "# Written by tito: this learner's tinytorch runs the textbook functions (your own code), not\n"
                "# the fused kernels of module {label} ({name}), until that module is completed. The environment\n"
                "# variable TINYTORCH_KERNELS=fast or =textbook overrides this file.\n")


def accel_module(project: Project) -> Module | None:
    """The module that exports ``accel`` (the fused kernels), if the course has one."""
    return next((m for m in project.modules() if m.export_target() == "accel"), None)


def wanted_kernels(project: Project, progress: Progress) -> str | None:
    """``"textbook"`` while a learner (any module started or completed) has not completed the
    acceleration module; None (no file: ``tinytorch`` switches the fused kernels on) otherwise."""
    accel = accel_module(project)
    if accel is None or progress.completed(accel) or not progress.data.get("modules"):
        return None
    return "textbook"


def sync_kernels(project: Project, progress: Progress) -> str | None:
    """Write or remove ``tinytorch/_kernels.txt`` to match the progress; say what changed (None: nothing)."""
    path = project.lib_path / KERNELS_FILE
    accel = accel_module(project)
    text = KERNELS_TEXT.format(label=accel.label, name=accel.name) if wanted_kernels(project, progress) else None
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if current == text:
        return None
    if text is None:
        path.unlink()
        return (f"tinytorch switches the fused kernels of module {accel.label} ({accel.name}) on again "
                f"({project.rel(path)} removed)." if accel else None)
    _atomic_write_text(path, text)
    return (f"tinytorch runs the textbook functions (your code), not the fused kernels of module {accel.label} "
            f"({accel.name}), until you complete that module ({project.rel(path)}).")


def module_digests(project: Project) -> dict[int, str]:
    """For each module number N, a sha256 over the package files of modules 1..N (and the
    hand-written ones): what the tests of module N ran against. ``_modidx.py`` and empty
    ``__init__.py`` files are left out (they change when any module is exported)."""
    import hashlib
    from .export import _iter_files, generated_source
    lib = project.lib_path
    by_mod: dict[int, list[bytes]] = {}
    for p in _iter_files(lib):
        if p.name in ("_modidx.py", KERNELS_FILE) or (p.name == "__init__.py" and p.stat().st_size == 0):
            continue
        src = generated_source(p, project.root)
        m = re.match(r"^(\d+)_", Path(src).parent.name) if src else None
        n = int(m.group(1)) if m else 0
        by_mod.setdefault(n, []).append(p.relative_to(lib).as_posix().encode() + b"\0" + p.read_bytes())
    out, h = {}, hashlib.sha256()
    done = set()
    for mod in project.modules():
        for n in sorted(k for k in by_mod if k <= mod.number and k not in done):
            for item in by_mod[n]:
                h.update(item + b"\0")
            done.add(n)
        out[mod.number] = h.copy().hexdigest()
    return out


def _record_verified(project: Project, progress: Progress) -> None:
    """Remember what each completed module's passing tests ran against."""
    digests = module_digests(project)
    progress.data["verified"] = {m.slug: digests[m.number] for m in project.modules() if progress.completed(m)}


def _checked(project: Project, progress: Progress, digests: dict[int, str] | None = None) -> dict[int, bool]:
    """Module number -> True unless tinytorch/ changed since its tests last passed."""
    ver = progress.data.get("verified")
    mods = project.modules()
    if not isinstance(ver, dict):
        return {m.number: True for m in mods}            # progress from an older tito: nothing to compare
    digests = digests or module_digests(project)
    return {m.number: ver.get(m.slug) == digests.get(m.number) for m in mods}


def module_state(project: Project, mod: Module, progress: Progress | None = None,
                 checked: dict[int, bool] | None = None) -> str:
    progress = progress or Progress(project)
    if progress.completed(mod):
        ok = (checked if checked is not None else _checked(project, progress)).get(mod.number, True)
        return COMPLETED if ok else UNCHECKED
    if "started" in progress.entry(mod) or project.workspace_notebook(mod).is_file():
        return IN_PROGRESS
    return NOT_STARTED


def next_step(project: Project, progress: Progress | None = None) -> str:
    """What the learner does next, from the true state of every module."""
    progress = progress or Progress(project)
    checked = _checked(project, progress)
    for m in project.modules():
        state = module_state(project, m, progress, checked)
        if state == COMPLETED:
            continue
        if state == UNCHECKED:
            return (f"Next: tito module complete {m.number} (tinytorch/ changed since the tests of module "
                    f"{m.label} last passed)")
        ws = project.workspace_notebook(m)
        if ws.is_file():
            return f"Next: finish {project.rel(ws)}, then tito module complete {m.number}"
        return f"Next: tito module start {m.number}"
    return "All modules completed. Train your GPT: tito train"


def package_sources(project: Project, progress: Progress | None = None) -> tuple[dict[int, Path], list[str]]:
    """Which notebook each module's package code comes from.

    Completed modules are exported from the learner's workspace copy, the
    others from the reference notebooks. Returns ``(sources, notes)``."""
    progress = progress or Progress(project)
    sources, notes = {}, []
    for m in project.modules():
        if not progress.completed(m):
            continue
        ws = project.workspace_notebook(m)
        if ws.is_file():
            sources[m.number] = ws
        else:
            notes.append(f"Module {m.label} ({m.name}) is marked completed but {project.rel(ws)} is gone; "
                         "its reference notebook is exported instead.")
    return sources, notes


# -------------------------------------------------------------- stubbing ----
def _enclosing(tree: ast.AST, line: int) -> str | None:
    """Qualified name of the innermost function or class around ``line``."""
    best: list[str] = []

    def visit(node, prefix):
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.lineno <= line <= (child.end_lineno or child.lineno):
                    name = prefix + [child.name]
                    if len(name) > len(best):
                        best = name
                    visit(child, name)
            else:
                visit(child, prefix)

    visit(tree, [])
    return ".".join(best) if best else None


def _test_references(text: str) -> dict[str, set[str]]:
    """``test_*`` function name -> every name and attribute its body mentions."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            names = set()
            for n in ast.walk(node):
                if isinstance(n, ast.Name):
                    names.add(n.id)
                elif isinstance(n, ast.Attribute):
                    names.add(n.attr)
            out[node.name] = names
    return out


def _strings(node: ast.AST | None, tables: dict[str, list[str]]) -> list[str]:
    """The strings a parametrize argument lists: a literal list/tuple, a module-level table's
    keys (``GRADCHECK_CASES``) or either wrapped in a call (``sorted(...)``, ``list(...)``)."""
    if isinstance(node, ast.Call) and node.args:
        return _strings(node.args[0], tables)
    if isinstance(node, ast.Name):
        return tables.get(node.id, [])
    if isinstance(node, (ast.List, ast.Tuple)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _param_ids(tree: ast.AST) -> dict[str, list[str]]:
    """``test_*`` function name -> the string ids of its ``@pytest.mark.parametrize`` (one argument)."""
    tables = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            v = node.value
            keys = v.keys if isinstance(v, ast.Dict) else v.elts if isinstance(v, (ast.List, ast.Tuple)) else []
            tables[node.targets[0].id] = [k.value for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    out = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "parametrize" and len(d.args) > 1:
                    out.setdefault(node.name, []).extend(_strings(d.args[1], tables))
    return out


def _decorator_strings(tree: ast.AST, what: str) -> list[str]:
    """String arguments of the decorators of top-level function ``what`` (``@derivative("mul")`` -> mul)."""
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == what:
            return [a.value for d in node.decorator_list if isinstance(d, ast.Call)
                    for a in d.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return []


def _checked_by(what: str, own: dict[str, set[str]], others: dict[str, dict[str, set[str]]],
                ops: list[str] = (), params: dict[str, list[str]] | None = None) -> tuple[list, list]:
    """Notebook tests and package tests (``path::name``) that mention the stubbed function; for a
    function registered under a name (``ops``), the notebook's parametrized cases of that name."""
    parts = what.split(".")
    keys = {parts[-1]}
    if len(parts) > 1 and (parts[-1].startswith("__") or parts[-1] in ("forward", "__call__")):
        keys.add(parts[-2])            # a constructor or forward is reached through the class
    hit = lambda t, refs: bool(keys & refs)
    nb = [t for t, refs in own.items() if hit(t, refs)]
    pkg = [f"{path}::{t}" for path, tests in others.items() for t, refs in tests.items() if hit(t, refs)]
    if nb or pkg:
        return nb, pkg
    # a rule in a table (``@derivative("mul") def _mul``): the parametrized cases named after it
    nb = [f"{t}[{op}]" for t, ids in (params or {}).items() for op in ops if op in ids]
    if nb:
        return nb, []
    # a helper no test calls by name: match its stem, in what the tests mention or as whole
    # words of their names ("_layer_norm_backward" -> "layer_norm"; "cat" is not "catches")
    stem = re.sub(r"_(backward|forward|impl|rows_?)$", "", parts[-1].strip("_"))
    if len(stem) < 3:
        return [], []
    hit = lambda t, refs: stem in refs or f"_{stem}_" in f"_{t}_"
    nb = [t for t, refs in own.items() if hit(t, refs)]
    pkg = [f"{path}::{t}" for path, tests in others.items() for t, refs in tests.items() if hit(t, refs)]
    if nb or pkg or len(parts) < 2:
        return nb, pkg
    # a method no test names (``SGD._update_group``): the tests of its class
    hit = lambda t, refs: parts[-2] in refs
    return ([t for t, refs in own.items() if hit(t, refs)],
            [f"{path}::{t}" for path, tests in others.items() for t, refs in tests.items() if hit(t, refs)])


def _checked_by_text(mod: Module, nb: list[str], pkg: list[str]) -> str:
    if nb:
        shown = ", ".join(nb[:3]) + (f" and {len(nb) - 3} more" if len(nb) > 3 else "")
        return f"checked by {shown}: tito module test {mod.number} -k \"{' or '.join(nb[:3])}\""
    if pkg:
        shown = ", ".join(pkg[:2]) + (f" and {len(pkg) - 2} more" if len(pkg) > 2 else "")
        return f"checked by {shown}: tito test {mod.number}"
    return f"checked by the tests of this module: tito module test {mod.number}"


def make_stub(text: str, mod: Module, name: str = "notebook",
              tests: dict[str, str] | None = None) -> tuple[str, int]:
    """Replace each solution block of ``text`` with ``raise NotImplementedError``.

    Each stub's message names the module, what to implement, the hint (a
    ``# Hint:`` comment above the block), and the tests that check it: the
    notebook's ``test_*`` functions that mention the function (or, failing
    those, the package tests in ``tests``, a mapping of path to source), with
    the command that runs them. Returns ``(stubbed_text, number_of_blocks)``.
    Signatures, docstrings, prose and tests stay as they are."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise LearnerError(f"{name}: line {e.lineno}: {e.msg}; cannot make a learner copy of it.") from None
    own = _test_references(text)
    params = _param_ids(tree)
    others = {path: _test_references(src) for path, src in (tests or {}).items()}
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i, count = 0, 0
    while i < len(lines):
        m = BEGIN_RE.match(lines[i].rstrip("\r\n"))
        if not m:
            if END_RE.match(lines[i].rstrip("\r\n")):
                raise LearnerError(f"{name}: line {i + 1}: '### END SOLUTION' without a '### BEGIN SOLUTION' above it.")
            out.append(lines[i])
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not END_RE.match(lines[j].rstrip("\r\n")):
            if BEGIN_RE.match(lines[j].rstrip("\r\n")):
                raise LearnerError(f"{name}: line {j + 1}: '### BEGIN SOLUTION' inside the solution block "
                                   f"opened on line {start + 1}.")
            j += 1
        if j == len(lines):
            raise LearnerError(f"{name}: line {start + 1}: '### BEGIN SOLUTION' is never closed by '### END SOLUTION'.")
        count += 1
        what = _enclosing(tree, start + 1) or "this cell"
        hint = DEFAULT_HINT
        k = len(out) - 1
        while k >= 0 and out[k].strip().startswith("#") and not out[k].startswith("# %%"):
            h = HINT_RE.match(out[k].rstrip("\r\n"))
            if h:
                hint = h.group("hint")
                break
            k -= 1
        eol = "\r\n" if lines[start].endswith("\r\n") else "\n"
        msg = f"Module {mod.number} ({mod.name}): implement {what} - hint: {hint}"
        checked = (_checked_by_text(mod, *_checked_by(what, own, others, _decorator_strings(tree, what), params))
                   if what != "this cell" else "")
        if checked:
            msg += f" - {checked}"
        out.append(f"{m.group('indent')}raise NotImplementedError({msg!r}){eol}")
        i = j + 1
    stub = "".join(out)
    try:
        ast.parse(stub)
    except SyntaxError as e:
        raise LearnerError(f"{name}: the learner copy would not parse (line {e.lineno}: {e.msg}). "
                           "Check that each '### BEGIN SOLUTION' sits at the indentation of the code it replaces.") from None
    return stub, count


# ---------------------------------------------------------------- backups ----
def backup(project: Project, mod: Module, path: Path) -> Path | None:
    """Copy ``path`` to ``workspace/backups/NN_name/<stem>-<timestamp><suffix>``."""
    if not path.is_file():
        return None
    d = project.backups_dir / mod.slug
    d.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = d / f"{path.stem}-{stamp}{path.suffix}"
    n = 1
    while dest.exists():
        dest = d / f"{path.stem}-{stamp}-{n}{path.suffix}"
        n += 1
    dest.write_bytes(path.read_bytes())
    return dest


def _paired_ipynb(py: Path) -> Path:
    return py.with_suffix(".ipynb")


def _write_ipynb(py: Path) -> Path:
    jupytext = _import_jupytext()
    nb = jupytext.read(py, fmt="py:percent")
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    dest = _paired_ipynb(py)
    jupytext.write(nb, dest, fmt="ipynb")
    return dest


def sync_paired_ipynb(project: Project, mod: Module) -> str | None:
    """If the learner edited the paired ``.ipynb`` after the ``.py``, bring the ``.py`` up to date."""
    py = project.workspace_notebook(mod)
    ipynb = _paired_ipynb(py)
    if not (py.is_file() and ipynb.is_file()) or ipynb.stat().st_mtime <= py.stat().st_mtime + 1e-3:
        return None
    jupytext = _import_jupytext()
    nb = jupytext.read(ipynb)
    text = jupytext.writes(nb, fmt="py:percent")
    if text == py.read_text(encoding="utf-8"):
        return None
    saved = backup(project, mod, py)
    _atomic_write_text(py, text)
    return (f"{project.rel(ipynb)} is newer than {project.rel(py)}: updated the .py from it "
            f"(previous .py saved as {project.rel(saved)}).")


# ------------------------------------------------------------------ start ----
@dataclass
class StartResult:
    path: Path
    blocks: int
    backups: list[Path] = field(default_factory=list)
    ipynb: Path | None = None
    missing_before: list[Module] = field(default_factory=list)
    recovered: str | None = None
    kernels: str | None = None      # what changed in tinytorch/_kernels.txt (sync_kernels)


def _stub_for(project: Project, mod: Module) -> tuple[str, int]:
    tests = {project.rel(t): t.read_text(encoding="utf-8") for t in project.package_tests(mod)}
    return make_stub(mod.notebook.read_text(encoding="utf-8"), mod, project.rel(mod.notebook), tests)


def _write_workspace(project: Project, mod: Module, stub: str) -> Path:
    dest = project.workspace_notebook(mod)
    _atomic_write_text(dest, stub)
    return dest


def start(project: Project, mod: Module, force: bool = False, ipynb: bool = False,
          on_wait=None) -> StartResult:
    try:
        with transaction(project, f"tito module start {mod.number}", on_wait=on_wait) as txn:
            res = _start(project, mod, force, ipynb)
            txn.commit()
    except LockBusy as e:
        raise LearnerError(str(e)) from None
    res.recovered = txn.recovered
    return res


def _start(project: Project, mod: Module, force: bool, ipynb: bool) -> StartResult:
    ws = project.workspace_notebook(mod)
    backups = []
    stub, n = _stub_for(project, mod)   # fails before anything is touched
    if ws.exists() or _paired_ipynb(ws).exists():
        if not force:
            raise LearnerError(
                f"You already started module {mod.label} ({mod.name}): {project.rel(ws)} exists. "
                f"Keep working there, or run 'tito module start {mod.number} --force' to start over "
                "(your file is backed up first).")
        backups = [b for b in (backup(project, mod, ws), backup(project, mod, _paired_ipynb(ws))) if b]
        if _paired_ipynb(ws).exists() and not ipynb:
            _paired_ipynb(ws).unlink()
    path = _write_workspace(project, mod, stub)
    res = StartResult(path, n, backups)
    if ipynb:
        res.ipynb = _write_ipynb(path)
    progress = Progress(project)
    progress.mark(mod, started=_now())
    progress.save()
    res.kernels = sync_kernels(project, progress)
    res.missing_before = [m for m in project.modules() if m.number < mod.number and not progress.completed(m)]
    return res


# --------------------------------------------------------------- complete ----
@dataclass
class CompleteResult:
    ok: bool
    # which step failed: "order", "export", "import", "notebook", "dependents", "package" or "timeout"
    stage: str = ""
    message: str = ""
    output: str = ""                # captured pytest/python output of the failing step
    failing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    package_tests: list[str] = field(default_factory=list)
    rechecked: list[Module] = field(default_factory=list)   # completed modules that build on this one
    seconds: float = 0.0
    restored: bool = False          # tinytorch/ had been changed and was put back


def _failed_tests(output: str) -> list[str]:
    out = []
    for line in output.splitlines():
        m = re.match(r"^(FAILED|ERROR) (\S+)", line)
        if m:
            out.append(m.group(2))
    return out


def _pytest_failure(run, what: str) -> str:
    if run.returncode == NO_TESTS:
        return f"{what}: no tests were collected."
    return f"{what} failed (pytest exit code {run.returncode})."


def complete(project: Project, mod: Module, *, timeout: float = DEFAULT_TIMEOUT, all_tests: bool = False,
             on_wait=None) -> CompleteResult:
    """Test the learner's notebook, export it, and run the tests of every module that
    depends on it; keep the result only if all pass.

    Runs under the project lock and the on-disk journal (tito/journal.py): on any
    failure, interruption or crash the package and the progress file go back byte
    for byte. The tests that run: the learner's notebook of ``mod``, the workspace
    notebooks of the completed modules after it (they build on it), and the package
    tests ``tests/test_NN_*.py`` of this module and of those completed modules --
    without the ``slow`` ones unless ``all_tests``. Each test run is stopped after
    ``timeout`` seconds."""
    t0 = time.monotonic()
    try:
        with transaction(project, f"tito module complete {mod.number}", on_wait=on_wait) as txn:
            res = _complete(project, mod, timeout, all_tests)
            if res.ok:
                txn.commit()
            else:
                res.restored = bool(res.changed)
    except LockBusy as e:
        raise LearnerError(str(e)) from None
    if txn.recovered:
        res.notes.insert(0, txn.recovered)
    res.seconds = time.monotonic() - t0
    return res


def _complete(project: Project, mod: Module, timeout: float, all_tests: bool) -> CompleteResult:
    progress = Progress(project)
    mods = project.modules()
    before = [m for m in mods if m.number < mod.number and not progress.completed(m)]
    if before:
        first = before[0]
        return CompleteResult(False, "order",
                              f"Module {mod.label} ({mod.name}) builds on module {first.label} ({first.name}), "
                              f"which is not completed yet. Complete the modules in order: start with "
                              f"'tito module complete {first.number}'.")
    ws = project.workspace_notebook(mod)
    if not ws.is_file():
        return CompleteResult(False, "order", f"There is no workspace copy of module {mod.label} ({mod.name}) yet. "
                                              f"Run 'tito module start {mod.number}' first.")
    notes = [n for n in [sync_paired_ipynb(project, mod)] if n]
    rel_ws = project.rel(ws)
    left = ws.read_text(encoding="utf-8").count(f"Module {mod.number} ({mod.name}): implement ")
    if left:
        notes.append(f"{rel_ws} still has {left} 'raise NotImplementedError' stub(s) from 'tito module start'.")

    # 1. the learner's notebook must export cleanly
    try:
        _, probs = check_notebook(read_notebook(ws), rel_ws)
    except ExportError as e:
        probs = [str(e)]
    if probs:
        return CompleteResult(False, "export", "Your notebook cannot be exported:\n" + "\n".join(probs), notes=notes)

    # 2. export it (the journal holds the previous package)
    try:
        exp = export([mod], sources={mod.number: ws}, root=project)
    except ExportError as e:
        return CompleteResult(False, "export", f"Exporting {rel_ws} failed:\n{e}", notes=notes)
    res = CompleteResult(False, changed=exp.changed, targets=exp.outputs.get(mod.slug, []), notes=notes)

    dependents = [m for m in mods if m.number > mod.number and progress.completed(m)]
    res.rechecked = dependents
    top = max([mod.number] + [m.number for m in dependents])
    upto = [m for m in mods if m.number <= top]

    # 3. the package imports (with a time limit: an exported cell may loop)
    targets = [m.export_target(ws if m is mod else project.workspace_notebook(m) if m in dependents else None)
               for m in upto]
    imports = "; ".join(f"import {project.lib_name}.{t}" for t in targets if t) or f"import {project.lib_name}"
    try:
        p = run_command(project, [sys.executable, "-c", f"import {project.lib_name}; {imports}"], timeout=timeout,
                        watch=True)
    except TimedOut as e:
        res.stage, res.message = "timeout", (f"'{imports}' did not finish: {e}. An exported cell runs forever "
                                             "when the package is imported; look for an endless loop there.")
        return res
    if p.returncode != 0:
        res.stage, res.message, res.output = "import", f"After exporting your code, '{imports}' fails.", p.output
        return res

    # 4. one test run: this notebook, the notebooks of completed modules built on it, package tests
    nb_paths = [ws] + [project.workspace_notebook(m) for m in dependents
                       if project.workspace_notebook(m).is_file()]
    # earlier modules' tests are left out: their code did not change and does not depend on this one
    pkg = [t for m in [mod, *dependents] for t in project.package_tests(m)]
    res.package_tests = [project.rel(t) for t in pkg]
    args = ["-q", "--tb=short", "-rfE", "-p", "no:cacheprovider", *([] if all_tests else FAST),
            *[project.rel(x) for x in nb_paths + pkg]]
    try:
        run = run_pytest(project, args, capture=True, timeout=timeout)
    except TimedOut as e:
        res.stage = "timeout"
        res.message = (f"The tests did not finish: {e}. Look for an endless loop there, or allow more time: "
                       f"'tito module complete {mod.number} --timeout {int(timeout * 2)}'.")
        return res
    if not run.ok:
        res.output, res.failing = run.output, _failed_tests(run.output)
        mine = [f for f in res.failing if f.startswith(rel_ws)]
        broken = [m for m in dependents
                  if any(f.startswith((project.rel(project.workspace_notebook(m)),
                                       *[project.rel(t) for t in project.package_tests(m)])) for f in res.failing)]
        if mine or run.returncode == NO_TESTS:
            res.stage, res.message = "notebook", _pytest_failure(run, f"The tests in {rel_ws}")
        elif broken:
            names = ", ".join(f"{m.label} ({m.name})" for m in broken)
            res.stage = "dependents"
            res.message = (f"Your module {mod.label} passes its own tests, but completed module(s) {names}, which "
                           f"build on it, now fail. Nothing was changed: module(s) {names} stay completed with the "
                           f"code that passed before.")
        else:
            res.stage, res.message = "package", _pytest_failure(run, f"The package tests of modules 01..{top:02d}")
        return res
    if not pkg:
        notes.append(f"There are no package tests (tests/test_NN_*.py) for modules 01..{top:02d}; "
                     "only the notebooks' tests ran.")

    # 5. record it; the caller commits (the journal's commit point)
    progress.mark(mod, completed=_now())
    progress.mark(mod, source=rel_ws)
    _record_verified(project, progress)
    progress.save()
    kernels = sync_kernels(project, progress)
    if kernels:
        notes.append(kernels)
    res.ok = True
    return res


# ------------------------------------------------------------------ reset ----
@dataclass
class ResetResult:
    backups: list[Path] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    workspace: Path | None = None
    blocks: int = 0
    recovered: str | None = None
    kernels: str | None = None


def reset(project: Project, mod: Module, workspace: bool = False, on_wait=None) -> ResetResult:
    """Put the reference export of ``mod`` back into the package (and, with
    ``workspace``, a fresh learner copy), after backing up the learner's file."""
    try:
        with transaction(project, f"tito module reset {mod.number}", on_wait=on_wait) as txn:
            res = _reset(project, mod, workspace)
            txn.commit()
    except LockBusy as e:
        raise LearnerError(str(e)) from None
    res.recovered = txn.recovered
    return res


def _reset(project: Project, mod: Module, workspace: bool) -> ResetResult:
    ws = project.workspace_notebook(mod)
    res = ResetResult()
    stub, blocks = _stub_for(project, mod) if workspace else ("", 0)
    res.backups = [b for b in (backup(project, mod, ws), backup(project, mod, _paired_ipynb(ws))) if b]
    was_checked = _checked(project, Progress(project))
    try:
        exp = export([mod], root=project)
    except ExportError as e:
        raise LearnerError(f"Exporting the reference notebook of module {mod.label} failed:\n{e}") from None
    res.changed = exp.changed
    progress = Progress(project)
    progress.unmark(mod, "completed")
    progress.unmark(mod, "source")
    if isinstance(progress.data.get("verified"), dict):
        # the reference code of a module is correct by construction: the completed modules that were
        # checked before still stand on it; the ones that were not stay not re-checked
        ver = progress.data["verified"]
        digests = module_digests(project)
        for m in project.modules():
            if progress.completed(m) and was_checked.get(m.number) and m.slug in ver:
                ver[m.slug] = digests[m.number]
    if workspace:
        res.workspace, res.blocks = _write_workspace(project, mod, stub), blocks
        if _paired_ipynb(ws).exists():
            _write_ipynb(ws)
        progress.mark(mod, started=_now())
    progress.save()
    res.kernels = sync_kernels(project, progress)
    return res
