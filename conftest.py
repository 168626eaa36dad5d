"""pytest collects the module notebooks as test modules.

`modules/NN_name/name.py` does not match pytest's `test_*.py` pattern, so this
hook collects it: its `test_*` functions run like any other tests. pyproject.toml
sets `--import-mode=importlib`, so notebook names such as `tensor.py` or
`transformers.py` never shadow installed packages.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
# Tests import this checkout's tinytorch and tito, even if another copy is installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tito.project import is_module_notebook  # noqa: E402


def pytest_collect_file(file_path, parent):
    # Paths given on the command line are already collected by pytest itself.
    if parent.session.isinitpath(file_path):
        return None
    if is_module_notebook(file_path, ROOT / "modules"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter):
    "Say so, in the last lines, when the PyTorch reference checks were skipped."
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and "PyTorch is not installed" in str(r.longrepr[-1])]
    if skipped:
        terminalreporter.write_line(
            f"NOTE: {len(skipped)} tests were skipped because PyTorch is not installed: the PyTorch parity checks "
            "did NOT run. Install the pinned reference with: pip install torch==2.13.0 (part of the 'dev' extra).",
            yellow=True, bold=True)
