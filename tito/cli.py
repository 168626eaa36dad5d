"""The ``tito`` command line."""
from __future__ import annotations

import os
from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .project import Project, ProjectError

app = typer.Typer(
    help="TinyTorch: build a deep-learning framework one module at a time.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
module_app = typer.Typer(help="The learner's modules: list, status, start, test, complete, reset.",
                         no_args_is_help=True)
app.add_typer(module_app, name="module")

out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def fail(msg: str, code: int = 1) -> None:
    err.print(msg, style="red")
    raise typer.Exit(code)


def _project() -> Project:
    try:
        return Project()
    except ProjectError as e:
        fail(str(e))


def _module(project: Project, key: str):
    try:
        return project.module(key)
    except ProjectError as e:
        fail(str(e))


# ------------------------------------------------------------------ export ----
@app.command("export")
def export_cmd(
    modules: Optional[List[str]] = typer.Argument(None, help="Module numbers or names (default: all)."),
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 if tinytorch/ is not what the "
                                                      "notebooks export."),
    reference: bool = typer.Option(False, "--reference", help="Export the reference notebooks even for modules "
                                                              "you completed (default: your workspace copy)."),
):
    """Export the module notebooks into the tinytorch package (nbdev)."""
    from .export import ExportError, export, plan_export
    from .learner import LearnerError, package_sources

    project = _project()
    if not project.modules():
        fail(f"No modules found: {project.rel(project.nbs_path)}/ has no NN_name/name.py notebooks.")
    chosen = [_module(project, k) for k in modules] if modules else None
    sources, notes = {}, []
    if not reference:
        try:
            sources, notes = package_sources(project)
        except LearnerError as e:
            fail(str(e))
        if chosen is not None:
            sources = {n: p for n, p in sources.items() if n in {m.number for m in chosen}}
    try:
        res = (plan_export if check else export)(chosen, sources=sources, root=project)
    except ExportError as e:
        fail(f"Export stopped; tinytorch/ was not changed.\n{e}")
    for note in notes:
        out.print(f"note: {note}")
    for slug, files in res.outputs.items():
        src = res.sources[slug]
        mine = " (your completed workspace copy)" if src.startswith(project.rel(project.workspace_dir) + "/") else ""
        out.print(f"{slug}: {src}{mine} -> {', '.join(files) or 'nothing to export'}")
    if check:
        if res.in_sync:
            out.print("tinytorch/ is in sync with the notebooks.")
            return
        for f in res.changed:
            err.print(f"  out of date: {f}")
        for f in res.removed:
            err.print(f"  stale:       {f}")
        fail("tinytorch/ is not what the notebooks export. Run: tito export")
    if res.in_sync:
        out.print("tinytorch/ is up to date; nothing changed.")
    else:
        for f in res.changed:
            out.print(f"  updated {f}")
        for f in res.removed:
            out.print(f"  removed {f} (its notebook is gone)")
        out.print(f"{len(res.changed)} file(s) updated, {len(res.removed)} removed.")


# -------------------------------------------------------------------- test ----
def _default_workers() -> int:
    return min(2, os.cpu_count() or 1)


@app.command("test")
def test_cmd(
    module: Optional[str] = typer.Argument(None, help="Module number or name (default: all tests)."),
    k: Optional[str] = typer.Option(None, "-k", help="Only tests matching this pytest -k expression."),
    exitfirst: bool = typer.Option(False, "-x", "--exitfirst", help="Stop at the first failure."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="One line per test."),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="Parallel workers for the full run "
                                                                  "(pytest-xdist; default 2, 1 to disable)."),
):
    """Run the tests: one module's (its notebook's test_* functions and tests/test_NN_*.py), or all."""
    from .testing import NO_TESTS, module_test_paths, run_pytest

    project = _project()
    args = ["-v" if verbose else "-q"]
    if k:
        args += ["-k", k]
    if exitfirst:
        args.append("-x")
    workers = 1
    if module is not None:
        m = _module(project, module)
        paths = module_test_paths(project, m)
        out.print(f"Testing module {m.label} ({m.name}): {', '.join(project.rel(p) for p in paths)}")
        args += [project.rel(p) for p in paths]
    else:
        workers = _default_workers() if jobs is None else jobs
    run = run_pytest(project, args, workers=workers)
    if run.returncode == NO_TESTS:
        fail("No tests ran (pytest collected nothing). That counts as a failure.")
    if not run.ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------ doctor ----
@app.command("doctor")
def doctor_cmd():
    """Check Python, the toolchain, the package and the export; say how to fix each problem."""
    from .doctor import run_checks

    project = _project()
    out.print(f"TinyTorch project: {project.root}")
    checks = run_checks(project)
    width = max(len(c.name) for c in checks)
    for c in checks:
        label = "ok     " if c.ok else "missing" if c.optional else "PROBLEM"
        out.print(f"{label} {c.name.ljust(width)}  {c.detail}", style=None if c.ok else "yellow" if c.optional else "red")
        if not c.ok and c.fix:
            out.print(f"        {' ' * width}  {'install' if c.optional else 'fix'}: {c.fix}")
    problems = [c for c in checks if not c.ok and not c.optional]
    missing = [c.name for c in checks if not c.ok and c.optional]
    if problems:
        fail(f"{len(problems)} problem(s) found." + (f" Optional, not installed: {', '.join(missing)}." if missing else ""))
    if missing:
        out.print(f"No problems found, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
                  "see above for what that disables.")
    else:
        out.print("No problems found.")


# ----------------------------------------------------------------- modules ----
def _module_table(project: Project) -> Table:
    from .learner import module_state

    progress = _progress(project)
    t = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    t.add_column("#")
    t.add_column("module")
    t.add_column("exports to")
    t.add_column("state")

    for m in project.modules():
        row = [m.label, m.name, f"{project.lib_name}.{m.export_target() or '?'}", module_state(project, m, progress)]
        t.add_row(*row)
    return t


def _progress(project: Project):
    from .learner import LearnerError, Progress
    try:
        return Progress(project)
    except LearnerError as e:
        fail(str(e))


@module_app.command("list")
def module_list():
    """List the modules in learning order, with export target and state."""
    project = _project()
    if not project.modules():
        fail(f"No modules found in {project.rel(project.nbs_path)}/.")
    out.print(_module_table(project))


@module_app.command("status")
def module_status():
    """Show your progress through the modules and what to do next."""
    from .learner import COMPLETED, module_state

    project = _project()
    mods = project.modules()
    if not mods:
        fail(f"No modules found in {project.rel(project.nbs_path)}/.")
    out.print(_module_table(project))
    progress = _progress(project)
    states = {m.number: module_state(project, m, progress) for m in mods}
    ws = [project.rel(project.workspace_notebook(m)) for m in mods if project.workspace_notebook(m).is_file()]
    if ws:
        out.print("Your notebooks: " + ", ".join(ws))
    done = sum(s == COMPLETED for s in states.values())
    out.print(f"Completed {done} of {len(mods)} modules.")
    nxt = next((m for m in mods if states[m.number] != COMPLETED), None)
    if nxt is None:
        out.print("All modules completed. Train your GPT: tito train")
    elif project.workspace_notebook(nxt).is_file():
        out.print(f"Next: finish {project.rel(project.workspace_notebook(nxt))}, then tito module complete {nxt.number}")
    else:
        out.print(f"Next: tito module start {nxt.number}")


@module_app.command("start")
def module_start(
    module: str = typer.Argument(..., help="Module number or name."),
    force: bool = typer.Option(False, "--force", help="Start over; your current copy is backed up first."),
    ipynb: bool = typer.Option(False, "--ipynb", help="Also write a paired .ipynb (jupytext keeps both in sync)."),
):
    """Create your workspace copy of a module, with the solutions replaced by stubs."""
    from .learner import LearnerError, start

    project = _project()
    m = _module(project, module)
    try:
        res = start(project, m, force=force, ipynb=ipynb)
    except LearnerError as e:
        fail(str(e))
    for b in res.backups:
        out.print(f"Backed up your previous file to {project.rel(b)}")
    rel = project.rel(res.path)
    out.print(f"Module {m.label} ({m.name}): your copy is {rel}")
    out.print(f"It has {res.blocks} place(s) to fill in: each 'raise NotImplementedError(...)' marks one.")
    if res.ipynb:
        out.print(f"Open it in Jupyter: jupyter lab {project.rel(res.ipynb)} (paired with {rel}; saving updates both)")
    else:
        out.print(f"Open it in Jupyter: jupyter lab {rel}  (with jupytext installed; in JupyterLab use "
                  "right-click > Open With > Notebook), or in any editor.")
    out.print(f"Check your work:       tito module test {m.number}")
    out.print(f"When its tests pass:   tito module complete {m.number}")
    if res.missing_before:
        first = res.missing_before[0]
        out.print(f"note: module {first.label} ({first.name}) comes first and is not completed yet; "
                  f"you can complete {m.label} only after it.")


@module_app.command("test")
def module_test(
    module: str = typer.Argument(..., help="Module number or name."),
    k: Optional[str] = typer.Option(None, "-k", help="Only tests matching this pytest -k expression."),
):
    """Run the tests of your workspace copy (or of the reference notebook if you have not started)."""
    from .learner import sync_paired_ipynb
    from .testing import NO_TESTS, run_pytest

    project = _project()
    m = _module(project, module)
    ws = project.workspace_notebook(m)
    note = sync_paired_ipynb(project, m)
    if note:
        out.print(note)
    target = ws if ws.is_file() else m.notebook
    out.print(f"Testing {project.rel(target)}")
    args = ["-q", "--tb=short", "-p", "no:cacheprovider", project.rel(target)] + (["-k", k] if k else [])
    run = run_pytest(project, args)
    if run.returncode == NO_TESTS:
        fail("No tests ran (pytest collected nothing). That counts as a failure.")
    if not run.ok:
        raise typer.Exit(1)


@module_app.command("complete")
def module_complete(module: str = typer.Argument(..., help="Module number or name.")):
    """Test your notebook, export it into tinytorch, run the package tests; keep it only if all pass."""
    from .learner import LearnerError, complete

    project = _project()
    m = _module(project, module)
    out.print(f"Completing module {m.label} ({m.name}) from {project.rel(project.workspace_notebook(m))}")
    try:
        res = complete(project, m)
    except LearnerError as e:
        fail(str(e))
    for n in res.notes:
        out.print(f"note: {n}")
    if not res.ok:
        if res.output:
            out.print(res.output.rstrip())
        if res.failing:
            more = f" and {len(res.failing) - 10} more" if len(res.failing) > 10 else ""
            err.print("Failing: " + ", ".join(res.failing[:10]) + more, style="red")
        msg = res.message
        if res.stage in ("notebook", "export", "import", "package"):
            msg += (f"\nFix your code in {project.rel(project.workspace_notebook(m))} and run "
                    f"'tito module complete {m.number}' again.")
        if res.stage in ("import", "package"):
            msg += "\ntinytorch/ was restored exactly as it was; no progress was recorded."
        elif res.stage in ("notebook", "export"):
            msg += "\ntinytorch/ was not changed; no progress was recorded."
        fail(msg)
    targets = ", ".join(res.targets) or "nothing"
    out.print(f"Module {m.label} ({m.name}) completed. Your code is now {targets}.")
    if res.package_tests:
        out.print(f"Package tests passed: {', '.join(res.package_tests)}")
    tgt = m.export_target(project.workspace_notebook(m))
    if tgt:
        out.print(f"'from {project.lib_name}.{tgt} import ...' now runs your code.")
    nxt = next((x for x in project.modules() if x.number > m.number), None)
    out.print(f"Next: tito module start {nxt.number}" if nxt else "All modules done. Train your GPT: tito train")


@module_app.command("reset")
def module_reset(
    module: str = typer.Argument(..., help="Module number or name."),
    workspace: bool = typer.Option(False, "--workspace", help="Also replace your workspace copy with a fresh one."),
):
    """Put the reference code of a module back into tinytorch (your file is backed up first)."""
    from .learner import LearnerError, reset

    project = _project()
    m = _module(project, module)
    try:
        res = reset(project, m, workspace=workspace)
    except LearnerError as e:
        fail(str(e))
    for b in res.backups:
        out.print(f"Backed up your file to {project.rel(b)}")
    out.print(f"tinytorch now runs the reference code of module {m.label} ({m.name})"
              + (f" ({len(res.changed)} file(s) updated)." if res.changed else " (it already did)."))
    if res.workspace:
        out.print(f"Fresh workspace copy: {project.rel(res.workspace)} ({res.blocks} place(s) to fill in).")
    else:
        ws = project.workspace_notebook(m)
        if ws.is_file():
            out.print(f"Your workspace copy {project.rel(ws)} is unchanged; "
                      f"'tito module reset {m.number} --workspace' starts it over.")


# ------------------------------------------------------------ train / generate ----
# The main job lives in tito/main_job.py; tinytorch is imported only when these commands run.
from .main_job import generate_cmd, train_cmd  # noqa: E402

app.command("train")(train_cmd)
app.command("generate")(generate_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
