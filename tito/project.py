"""Project layout: the root, the modules and where things live.

The module order is derived only from the folder names ``modules/NN_name/``;
nothing else in the project repeats the list.
"""
from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProjectError", "Module", "Project", "find_root", "MODULE_DIR_RE",
    "WORKSPACE_DIR", "STATE_DIR", "is_module_notebook",
]

MODULE_DIR_RE = re.compile(r"^(\d\d)_([A-Za-z][A-Za-z0-9_]*)$")
DEFAULT_EXP_RE = re.compile(r"^\s*#\s*\|\s*default_exp\s+(\S+)\s*$", re.MULTILINE)
#: learner copies of the notebooks (git-ignored)
WORKSPACE_DIR = "workspace"
#: learner progress and other local state (git-ignored)
STATE_DIR = ".tito"


class ProjectError(Exception):
    """A problem with the project layout, reported to the user in plain words."""


def is_module_notebook(path: os.PathLike | str, modules_dir: os.PathLike | str) -> bool:
    """True if ``path`` is ``<modules_dir>/NN_name/name.py``."""
    path = Path(path)
    m = MODULE_DIR_RE.match(path.parent.name)
    return (bool(m) and path.suffix == ".py" and path.stem == m.group(2)
            and _same(path.parent.parent, Path(modules_dir)))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


@dataclass(frozen=True)
class Module:
    """One learning module: ``modules/NN_name/name.py``."""
    number: int
    name: str
    folder: Path          # absolute path of modules/NN_name

    @property
    def slug(self) -> str:
        """Folder name, e.g. ``01_tensor``."""
        return self.folder.name

    @property
    def notebook(self) -> Path:
        return self.folder / f"{self.name}.py"

    @property
    def label(self) -> str:
        return f"{self.number:02d}"

    def export_target(self, source: Path | None = None) -> str | None:
        """Dotted module named by the notebook's ``#| default_exp`` (None if absent)."""
        src = source or self.notebook
        try:
            text = src.read_text(encoding="utf-8")
        except OSError:
            return None
        found = DEFAULT_EXP_RE.findall(text)
        return found[-1] if found else None


def find_root(start: os.PathLike | str | None = None) -> Path:
    """The project root: the nearest folder at or above ``start`` (default: the
    current folder) holding ``settings.ini`` and ``modules/``. Falls back to the
    folder this ``tito`` package lives in (an editable install)."""
    candidates = []
    here = Path(start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    candidates.append(Path(__file__).resolve().parent.parent)
    for c in candidates:
        if (c / "settings.ini").is_file() and (c / "modules").is_dir():
            return c
    raise ProjectError(
        f"No TinyTorch project found at or above {here} (a folder with settings.ini and modules/). "
        "Run tito from inside your TinyTorch clone.")


class Project:
    """Paths of one TinyTorch project, rooted at ``root``."""

    def __init__(self, root: os.PathLike | str | None = None):
        self.root = Path(root).resolve() if root is not None else find_root()
        if not (self.root / "settings.ini").is_file():
            raise ProjectError(f"{self.root} has no settings.ini; it is not a TinyTorch project root.")
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(self.root / "settings.ini", encoding="utf-8")
        d = cfg["DEFAULT"]
        self.lib_name = d.get("lib_name", "tinytorch")
        self.lib_path = self.root / d.get("lib_path", self.lib_name)
        self.nbs_path = self.root / d.get("nbs_path", "modules")

    # -- places -----------------------------------------------------------
    @property
    def tests_dir(self) -> Path:
        return self.root / "tests"

    @property
    def workspace_dir(self) -> Path:
        return self.root / WORKSPACE_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def progress_file(self) -> Path:
        return self.state_dir / "progress.json"

    @property
    def backups_dir(self) -> Path:
        return self.workspace_dir / "backups"

    def rel(self, path: os.PathLike | str) -> str:
        """``path`` relative to the root, with forward slashes (for messages)."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    # -- modules ----------------------------------------------------------
    def modules(self) -> list[Module]:
        """All modules, in learning order (by their NN prefix)."""
        found: dict[int, Module] = {}
        if not self.nbs_path.is_dir():
            return []
        for d in sorted(self.nbs_path.iterdir()):
            m = MODULE_DIR_RE.match(d.name)
            if not (m and d.is_dir()):
                continue
            mod = Module(int(m.group(1)), m.group(2), d)
            if not mod.notebook.is_file():
                continue
            if mod.number in found:
                raise ProjectError(
                    f"Two modules share the number {mod.label}: {found[mod.number].slug} and {mod.slug}. "
                    "Rename one folder under modules/.")
            found[mod.number] = mod
        return [found[k] for k in sorted(found)]

    def incomplete_module_dirs(self) -> list[Path]:
        """Folders named like modules that lack their ``name.py`` notebook."""
        out = []
        if self.nbs_path.is_dir():
            for d in sorted(self.nbs_path.iterdir()):
                m = MODULE_DIR_RE.match(d.name)
                if m and d.is_dir() and not (d / f"{m.group(2)}.py").is_file():
                    out.append(d)
        return out

    def module(self, key: str | int) -> Module:
        """Look a module up by number (``1``, ``01``), name (``tensor``) or folder (``01_tensor``)."""
        mods = self.modules()
        k = str(key).strip()
        for m in mods:
            if k.isdigit() and int(k) == m.number:
                return m
            if k in (m.name, m.slug):
                return m
        avail = ", ".join(f"{m.label} {m.name}" for m in mods) or "none"
        raise ProjectError(f"No module {k!r}. Available modules: {avail}.")

    @property
    def jupyter_config_dir(self) -> Path:
        """JupyterLab settings shipped with the project (``tito lab`` puts them on JUPYTER_CONFIG_PATH)."""
        return self.root / ".jupyter"

    def workspace_notebook(self, mod: Module) -> Path:
        """The learner's copy of ``mod``: ``workspace/NN_name/name.py``."""
        return self.workspace_dir / mod.slug / f"{mod.name}.py"

    def package_tests(self, mod: Module) -> list[Path]:
        """Files under tests/ that belong to ``mod``: ``tests/test_NN_*.py``."""
        if not self.tests_dir.is_dir():
            return []
        return sorted(self.tests_dir.glob(f"test_{mod.label}_*.py"))
