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


@app.callback()
def _recover_interrupted():
    """Before any command: undo a `complete`/`export`/`reset` that was interrupted (tito/journal.py)."""
    from .journal import recover
    try:
        project = Project()
    except ProjectError:
        return
    try:
        note = recover(project)
    except OSError as e:
        fail(f"Could not undo an interrupted tito command: {e}")
    if note:
        err.print(f"note: {note}")


def _waiting(msg: str) -> None:
    err.print(msg)


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
    from .journal import LockBusy, transaction
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
        if check:
            res = plan_export(chosen, sources=sources, root=project)
        else:
            with transaction(project, "tito export", on_wait=_waiting) as txn:
                res = export(chosen, sources=sources, root=project)
                txn.commit()
    except ExportError as e:
        fail(f"Export stopped; tinytorch/ was not changed.\n{e}")
    except LockBusy as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("Interrupted; tinytorch/ was restored exactly as it was.", 130)
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


# --------------------------------------------------------------------- lab ----
def lab_command(project: Project, paths: List[str], extra: List[str] = ()):
    """``(argv, env)`` that start JupyterLab with the project's settings: ``.py`` notebooks open as
    notebooks (``.jupyter/labconfig/default_setting_overrides.json`` sets jupytext's viewer)."""
    import sys
    env = dict(os.environ)
    cfg = [str(project.jupyter_config_dir)] + [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(dict.fromkeys(cfg))
    pp = [str(project.root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pp))       # kernels import this checkout's tinytorch
    return [sys.executable, "-m", "jupyter", "lab", *extra, *paths], env


@app.command("lab", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_cmd(
    ctx: typer.Context,
    paths: Optional[List[str]] = typer.Argument(None, help="Notebooks to open, e.g. workspace/01_tensor/tensor.py."),
):
    """Open JupyterLab with the notebooks (.py files) opening as notebooks. Other options go to jupyter lab."""
    import importlib.util
    import subprocess

    project = _project()
    for mod in ("jupyterlab", "jupytext"):
        if importlib.util.find_spec(mod) is None:
            fail(f"{mod} is not installed. Install it with: pip install -e \".[lab]\"")
    paths = list(paths or [])
    missing = [p for p in paths if not (project.root / p).exists() and not os.path.exists(p)]
    if missing:
        fail(f"No such file: {', '.join(missing)}")
    rel = [project.rel(os.path.abspath(p)) if os.path.exists(p) else p for p in paths]
    cmd, env = lab_command(project, rel, list(ctx.args))
    out.print("Starting JupyterLab; .py notebooks open as notebooks (saving writes the .py). Stop it with Ctrl-C.")
    try:
        rc = subprocess.call(cmd, cwd=project.root, env=env)
    except KeyboardInterrupt:
        rc = 0
    if rc:
        raise typer.Exit(rc)


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
    from .learner import _checked, module_state

    progress = _progress(project)
    checked = _checked(project, progress)
    t = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    t.add_column("#")
    t.add_column("module")
    t.add_column("exports to")
    t.add_column("state")

    for m in project.modules():
        row = [m.label, m.name, f"{project.lib_name}.{m.export_target() or '?'}",
               module_state(project, m, progress, checked)]
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
    from .learner import COMPLETED, UNCHECKED, _checked, module_state, next_step

    project = _project()
    mods = project.modules()
    if not mods:
        fail(f"No modules found in {project.rel(project.nbs_path)}/.")
    out.print(_module_table(project))
    progress = _progress(project)
    checked = _checked(project, progress)
    states = {m.number: module_state(project, m, progress, checked) for m in mods}
    ws = [project.rel(project.workspace_notebook(m)) for m in mods if project.workspace_notebook(m).is_file()]
    if ws:
        out.print("Your notebooks: " + ", ".join(ws))
    done = sum(s == COMPLETED for s in states.values())
    out.print(f"Completed {done} of {len(mods)} modules.")
    if any(s == UNCHECKED for s in states.values()):
        names = ", ".join(f"{m.label} ({m.name})" for m in mods if states[m.number] == UNCHECKED)
        out.print(f"Not counted: {names}. tinytorch/ changed since their tests last passed (for example "
                  "'tito export' after editing a workspace copy); 'tito module complete N' checks them again.")
    from .learner import KERNELS_FILE
    kernels = project.lib_path / KERNELS_FILE
    if kernels.is_file():
        out.print(f"tinytorch runs the textbook functions, not the fused kernels, as {project.rel(kernels)} says.")
    out.print(next_step(project, progress))


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
        res = start(project, m, force=force, ipynb=ipynb, on_wait=_waiting)
    except LearnerError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("Interrupted; nothing was changed.", 130)
    for b in res.backups:
        out.print(f"Backed up your previous file to {project.rel(b)}")
    rel = project.rel(res.path)
    out.print(f"Module {m.label} ({m.name}): your copy is {rel}")
    if res.kernels:
        out.print(res.kernels)
    out.print(f"It has {res.blocks} place(s) to fill in: each 'raise NotImplementedError(...)' marks one.")
    if res.ipynb:
        out.print(f"Open it in Jupyter: jupyter lab {project.rel(res.ipynb)} (paired with {rel}; saving updates both)")
    else:
        out.print(f"Open it as a notebook: tito lab {rel}  (or in any editor).")
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
def module_complete(
    module: str = typer.Argument(..., help="Module number or name."),
    timeout: float = typer.Option(300.0, "--timeout", min=1, help="Seconds the tests may run before they are "
                                                                  "stopped (an endless loop is reported)."),
    all_tests: bool = typer.Option(False, "--all-tests", help="Also run the slow integration tests "
                                                              "(@pytest.mark.slow; tito test always does)."),
):
    """Test your notebook, export it into tinytorch, run the tests of every module that builds on it; keep it only
    if all pass."""
    from .learner import LearnerError, complete, next_step

    project = _project()
    m = _module(project, module)
    out.print(f"Completing module {m.label} ({m.name}) from {project.rel(project.workspace_notebook(m))}")
    try:
        res = complete(project, m, timeout=timeout, all_tests=all_tests, on_wait=_waiting)
    except LearnerError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("Interrupted; tinytorch/ was restored exactly as it was; no progress was recorded.", 130)
    for n in res.notes:
        out.print(f"note: {n}")
    if not res.ok:
        if res.output:
            out.print(res.output.rstrip())
        if res.failing:
            more = f" and {len(res.failing) - 10} more" if len(res.failing) > 10 else ""
            err.print("Failing: " + ", ".join(res.failing[:10]) + more, style="red")
        msg = res.message
        if res.stage != "order":
            msg += (f"\nFix your code in {project.rel(project.workspace_notebook(m))} and run "
                    f"'tito module complete {m.number}' again.")
        if res.stage != "order":
            msg += ("\ntinytorch/ was restored exactly as it was; no progress was recorded." if res.restored else
                    "\ntinytorch/ was not changed; no progress was recorded.")
        fail(msg)
    targets = ", ".join(res.targets) or "nothing"
    out.print(f"Module {m.label} ({m.name}) completed in {res.seconds:.1f} s. Your code is now {targets}.")
    if res.rechecked:
        out.print("Re-checked the completed modules that build on it: "
                  + ", ".join(f"{x.label} ({x.name})" for x in res.rechecked))
    if res.package_tests:
        out.print(f"Package tests passed: {', '.join(res.package_tests)}")
    tgt = m.export_target(project.workspace_notebook(m))
    if tgt:
        out.print(f"'from {project.lib_name}.{tgt} import ...' now runs your code.")
    out.print(next_step(project))


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
        res = reset(project, m, workspace=workspace, on_wait=_waiting)
    except LearnerError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("Interrupted; tinytorch/ and your files were restored exactly as they were.", 130)
    for b in res.backups:
        out.print(f"Backed up your file to {project.rel(b)}")
    out.print(f"tinytorch now runs the reference code of module {m.label} ({m.name})"
              + (f" ({len(res.changed)} file(s) updated)." if res.changed else " (it already did)."))
    if res.kernels:
        out.print(res.kernels)
    if res.workspace:
        out.print(f"Fresh workspace copy: {project.rel(res.workspace)} ({res.blocks} place(s) to fill in).")
    else:
        ws = project.workspace_notebook(m)
        if ws.is_file():
            out.print(f"Your workspace copy {project.rel(ws)} is unchanged; "
                      f"'tito module reset {m.number} --workspace' starts it over.")


# ------------------------------------------------------------ train / generate ----
# The main job lives in tito/main_job.py; tinytorch is imported only when these commands run.
from .main_job import export_hf_cmd, generate_cmd, train_cmd  # noqa: E402

app.command("train")(train_cmd)
app.command("generate")(generate_cmd)
app.command("export-hf")(export_hf_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
