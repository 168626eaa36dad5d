"""``tito doctor``: check the environment and the project, say how to fix each problem."""
from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .project import Project

__all__ = ["Check", "run_checks"]

PINNED = {"nbdev": "2.4.14", "execnb": "0.1.18"}
MIN_PYTHON = (3, 10)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""        # the command (or action) that fixes a problem
    optional: bool = False   # a missing optional tool disables something but is not a problem


# Optional distributions: (distribution, exact version wanted or None, what is missing without it, install command).
OPTIONAL = (
    ("torch", "2.13.0", "the PyTorch parity tests are skipped (values and gradients are then checked only by finite "
                        "differences); tito test says so at its end", "pip install torch==2.13.0"),
    ("matplotlib", None, "tito train writes no loss.png (history.json still holds the losses)",
     "pip install 'tinytorch[plot]'"),
    ("transformers", None, "the Hugging Face GPT-2 interop tests are skipped", "pip install transformers"),
    ("pytest-xdist", None, "tito test runs on one core", "pip install pytest-xdist"),
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


KERNEL_SETTINGS = {
    "fast": "fast: module 18's fused kernels, module 19's in-place optimizer updates, "
            "module 20's worker processes where the system can fork",
    "textbook": "textbook: the functions of modules 1-17 as written (tinytorch/_kernels.txt or TINYTORCH_KERNELS; "
                "tito module complete 18 switches the fast ones on)",
}


def run_checks(project: Project) -> list[Check]:
    checks: list[Check] = []
    install = 'pip install -e ".[dev]"'
    py = platform.python_version()
    checks.append(Check("Python", sys.version_info[:2] >= MIN_PYTHON,
                        f"{py} ({sys.executable})" if sys.version_info[:2] >= MIN_PYTHON else
                        f"{py} is too old; TinyTorch needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
                        "install a newer Python and create the venv again"))
    np_v = _version("numpy")
    checks.append(Check("NumPy", np_v is not None, np_v or "not installed", install))
    for dist, pin in PINNED.items():
        v = _version(dist)
        ok = v == pin
        detail = v if ok else (f"{v} installed, but the export needs exactly {pin}" if v else "not installed")
        checks.append(Check(dist, ok, detail, install))
    jt = _version("jupytext")
    checks.append(Check("jupytext", jt is not None, jt or "not installed", install))
    for dist in ("typer", "rich"):
        v = _version(dist)
        checks.append(Check(dist, v is not None, v or "not installed: the tito command line needs it", install))
    for dist, pin, without, fix in OPTIONAL:
        v = _version(dist)
        if v is None:
            checks.append(Check(dist, False, f"not installed: {without}", fix, optional=True))
        elif pin is not None and v.split("+")[0] != pin:
            checks.append(Check(dist, False, f"{v} installed; the tests are pinned to {pin}", fix, optional=True))
        else:
            checks.append(Check(dist, True, v))

    modules = project.modules()
    checks.append(Check("modules", bool(modules),
                        f"{len(modules)} found in {project.rel(project.nbs_path)}/" if modules else
                        f"no modules/NN_name/name.py notebooks in {project.rel(project.nbs_path)}/",
                        "run tito from the root of a TinyTorch clone"))
    for d in project.incomplete_module_dirs():
        checks.append(Check(f"module folder {d.name}", False,
                            f"has no notebook {d.name.split('_', 1)[1]}.py, so it is ignored",
                            f"add modules/{d.name}/{d.name.split('_', 1)[1]}.py or remove the folder"))
    for m in modules:
        if not m.export_target():
            checks.append(Check(f"module {m.slug}", False, "has no '#| default_exp <module>' cell",
                                f"add '#| default_exp <module>' to {project.rel(m.notebook)}"))

    # does tinytorch import, and is it this checkout's?
    code = ("import sys, tinytorch, pathlib; "
            "print(pathlib.Path(tinytorch.__file__).resolve().parent); "
            "setting = getattr(tinytorch, '_kernels_setting', None); print(setting() if setting else '')")
    p = subprocess.run([sys.executable, "-c", code], cwd=project.root, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["unknown error"])[-1]
        checks.append(Check("import tinytorch", False, f"fails: {last}",
                            "tito export (then run tito doctor again to see what remains)"))
    else:
        checks.append(Check("import tinytorch", True, "ok"))
        setting = (p.stdout.splitlines() + ["", ""])[1].strip()
        if setting:
            checks.append(Check("kernels", True, KERNEL_SETTINGS.get(setting, setting)))
    # the installed copy (what `python -c 'import tinytorch'` gets outside the project folder)
    q = subprocess.run([sys.executable, "-c", "import importlib.util as u; s=u.find_spec('tinytorch'); "
                        "print(s.origin if s else '')"], cwd=Path(project.root).anchor,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    origin = q.stdout.strip()
    if not origin:
        checks.append(Check("installed", False, "tinytorch is not installed in this Python", install))
    else:
        here = Path(origin).resolve().parent
        same = here == project.lib_path.resolve()
        checks.append(Check("installed", same, "this checkout (editable install)" if same else
                            f"another copy is installed: {here}", install))

    # is the package what the notebooks export?
    try:
        from .export import ExportError, plan_export
        from .learner import LearnerError, package_sources
        try:
            sources, notes = package_sources(project)
        except LearnerError as e:
            sources, notes = {}, [str(e)]
        res = plan_export(sources=sources, root=project)
        if res.in_sync:
            detail = "tinytorch/ matches the notebooks"
            if sources:
                detail += f" (modules {', '.join(f'{n:02d}' for n in sorted(sources))} from your workspace)"
            checks.append(Check("export", True, detail))
        else:
            files = res.changed + [f"{f} (stale)" for f in res.removed]
            checks.append(Check("export", False, "tinytorch/ is out of date with the notebooks: " + ", ".join(files),
                                "tito export"))
        for n in notes:
            checks.append(Check("progress", False, n, "tito module reset N"))
    except ExportError as e:
        checks.append(Check("export", False, f"the notebooks do not export:\n{e}",
                            "fix the notebook cell named above, then run tito export"))
    except ImportError as e:
        checks.append(Check("export", False, f"cannot run the export: {e}", install))
    return checks
