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

from .export import ExportError, _atomic_write, export, read_notebook, check_notebook, restore_package, snapshot_package
from .project import Module, Project
from .testing import NO_TESTS, project_env, run_pytest

__all__ = ["LearnerError", "Progress", "make_stub", "start", "complete", "reset", "package_sources",
           "module_state", "backup", "sync_paired_ipynb", "CompleteResult"]

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)###\s*BEGIN SOLUTION\b.*$")
END_RE = re.compile(r"^[ \t]*###\s*END SOLUTION\b.*$")
HINT_RE = re.compile(r"^[ \t]*#\s*hint\s*:\s*(?P<hint>.+?)\s*$", re.IGNORECASE)
DEFAULT_HINT = "read the docstring and the tests of this module"

COMPLETED, IN_PROGRESS, NOT_STARTED = "completed", "in progress", "not started"


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


def module_state(project: Project, mod: Module, progress: Progress | None = None) -> str:
    progress = progress or Progress(project)
    if progress.completed(mod):
        return COMPLETED
    if "started" in progress.entry(mod) or project.workspace_notebook(mod).is_file():
        return IN_PROGRESS
    return NOT_STARTED


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


def make_stub(text: str, mod: Module, name: str = "notebook") -> tuple[str, int]:
    """Replace each solution block of ``text`` with ``raise NotImplementedError``.

    Returns ``(stubbed_text, number_of_blocks)``. Signatures, docstrings, prose
    and tests stay as they are."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise LearnerError(f"{name}: line {e.lineno}: {e.msg}; cannot make a learner copy of it.") from None
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
    import jupytext
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
    import jupytext
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


def _stub_for(project: Project, mod: Module) -> tuple[str, int]:
    return make_stub(mod.notebook.read_text(encoding="utf-8"), mod, project.rel(mod.notebook))


def _write_workspace(project: Project, mod: Module, stub: str) -> Path:
    dest = project.workspace_notebook(mod)
    _atomic_write_text(dest, stub)
    return dest


def start(project: Project, mod: Module, force: bool = False, ipynb: bool = False) -> StartResult:
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
    res.missing_before = [m for m in project.modules() if m.number < mod.number and not progress.completed(m)]
    return res


# --------------------------------------------------------------- complete ----
@dataclass
class CompleteResult:
    ok: bool
    stage: str = ""                 # which step failed: "order", "notebook", "export", "import", "package"
    message: str = ""
    output: str = ""                # captured pytest/python output of the failing step
    failing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    package_tests: list[str] = field(default_factory=list)


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


def complete(project: Project, mod: Module) -> CompleteResult:
    """Test the learner's notebook, export it, run the package tests of modules
    1..N; on any failure put the package back byte for byte and record nothing."""
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

    # 1. the learner's notebook: it must export cleanly and its tests must pass
    try:
        _, probs = check_notebook(read_notebook(ws), rel_ws)
    except ExportError as e:
        probs = [str(e)]
    if probs:
        return CompleteResult(False, "export", "Your notebook cannot be exported:\n" + "\n".join(probs), notes=notes)
    run = run_pytest(project, ["-q", "--tb=short", "-rfE", "-p", "no:cacheprovider", rel_ws], capture=True)
    if not run.ok:
        return CompleteResult(False, "notebook", _pytest_failure(run, f"The tests in {rel_ws}"),
                              run.output, _failed_tests(run.output), notes=notes)

    # 2. export it and run the package tests; roll back on any failure
    snapshot = snapshot_package(project)
    ok = False
    try:
        try:
            res = export([mod], sources={mod.number: ws}, root=project)
        except ExportError as e:
            return CompleteResult(False, "export", f"Exporting {rel_ws} failed:\n{e}", notes=notes)
        targets = [m.export_target(ws if m is mod else None) for m in mods if m.number <= mod.number]
        targets = [t for t in targets if t]
        imports = "; ".join(f"import {project.lib_name}.{t}" for t in targets) or f"import {project.lib_name}"
        p = subprocess.run([sys.executable, "-c", f"import {project.lib_name}; {imports}"], cwd=project.root,
                           env=project_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, encoding="utf-8", errors="replace")
        if p.returncode != 0:
            return CompleteResult(False, "import", f"After exporting your code, '{imports}' fails.", p.stdout,
                                  notes=notes)
        tests = [t for m in mods if m.number <= mod.number for t in project.package_tests(m)]
        rel_tests = [project.rel(t) for t in tests]
        if tests:
            run = run_pytest(project, ["-q", "--tb=short", "-rfE", "-p", "no:cacheprovider", *rel_tests],
                             capture=True)
            if not run.ok:
                return CompleteResult(False, "package",
                                      _pytest_failure(run, f"The package tests of modules 01..{mod.label}"),
                                      run.output, _failed_tests(run.output), notes=notes)
        else:
            notes.append(f"There are no package tests (tests/test_NN_*.py) for modules 01..{mod.label}; "
                         "only the import was checked.")
        progress.mark(mod, completed=_now())
        progress.mark(mod, source=rel_ws)
        progress.save()
        ok = True
        return CompleteResult(True, changed=res.changed, targets=res.outputs.get(mod.slug, []), notes=notes,
                              package_tests=rel_tests)
    finally:
        if not ok:
            restore_package(snapshot, project)


# ------------------------------------------------------------------ reset ----
@dataclass
class ResetResult:
    backups: list[Path] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    workspace: Path | None = None
    blocks: int = 0


def reset(project: Project, mod: Module, workspace: bool = False) -> ResetResult:
    """Put the reference export of ``mod`` back into the package (and, with
    ``workspace``, a fresh learner copy), after backing up the learner's file."""
    ws = project.workspace_notebook(mod)
    res = ResetResult()
    stub, blocks = _stub_for(project, mod) if workspace else ("", 0)
    res.backups = [b for b in (backup(project, mod, ws), backup(project, mod, _paired_ipynb(ws))) if b]
    try:
        exp = export([mod], root=project)
    except ExportError as e:
        raise LearnerError(f"Exporting the reference notebook of module {mod.label} failed:\n{e}") from None
    res.changed = exp.changed
    progress = Progress(project)
    progress.unmark(mod, "completed")
    progress.unmark(mod, "source")
    if workspace:
        res.workspace, res.blocks = _write_workspace(project, mod, stub), blocks
        if _paired_ipynb(ws).exists():
            _write_ipynb(ws)
        progress.mark(mod, started=_now())
    progress.save()
    return res
