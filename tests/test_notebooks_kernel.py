"""Every module notebook executed top to bottom in a real Jupyter kernel (nbclient), as a
learner runs it: the reference notebook's ``run_tests`` cells print passing summaries, and the
learner's copy made by ``tito module start`` prints failing ones, without the ``run_tests``
cells themselves ever raising, and no cell before them stopping Jupyter's "Run All"."""
import os
import re
from pathlib import Path

import pytest

from tito.learner import make_stub
from tito.project import Project
from tito.testing import project_env

nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Project(ROOT)
MODULES = PROJECT.modules()
#: seconds one cell may take in the kernel
CELL_TIMEOUT = 900
#: notebooks being rewritten that have no run_tests cell yet (expected to fail while they have none)
PENDING = {"03_autograd": "its run_tests cell comes with the rewrite of modules 01-03",
           "10_attention": "its run_tests cells come with the rewrite of module 10",
           "16_training": "the training chapter is being split into 16 and 17; its run_tests cells come with that"}
#: stubbed notebooks whose last demo cell raises NotImplementedError, so that Jupyter's "Run All",
#: which stops at the first error, never reaches the run_tests cell after it. The fix: wrap the demo
#: in ``try: ... except NotImplementedError as e: print("skipped until ...", e)``, as 07-09 and 11 do.
STOPS_RUN_ALL = set()
SUMMARY = re.compile(r"^(?P<n>\d+) tests?: (?P<passed>\d+) passed(?:, (?P<failed>\d+) failed)?"
                     r"(?:, (?P<todo>\d+) not implemented yet)?(?:, (?P<skipped>\d+) skipped)?\.$", re.M)


def _params():
    out = []
    for m in MODULES:
        pending = m.slug in PENDING and "run_tests(" not in m.notebook.read_text(encoding="utf-8")
        out.append(pytest.param(m, id=m.slug, marks=[pytest.mark.xfail(reason=PENDING[m.slug], strict=True)]
                                if pending else []))
    return out


def _is_run_tests_cell(cell) -> bool:
    return cell.cell_type == "code" and re.search(r"^\s*run_tests\(", cell.source, re.M) is not None


def _text(cell, name="stdout") -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == name)


def _errors(cell) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def execute(path: Path, folder: Path, allow_errors: bool):
    """Run the percent-format notebook ``path`` in a fresh python3 kernel whose working folder
    is ``folder`` (named ``NN_name``, as Jupyter's is); return the executed notebook."""
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = project_env(PROJECT)
    for var in ("TITO_RUN_TESTS", "MPLBACKEND"):
        env.pop(var, None)
    env["MPLBACKEND"] = "Agg"                   # pictures are drawn, never shown in a window
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                                     resources={"metadata": {"path": str(folder)}})
    client.execute(env=env, cwd=str(folder))
    return nb


def summaries(nb) -> list[tuple[int, dict]]:
    """(cell index, counts) of every run_tests cell; a cell that printed no summary counts as None."""
    out = []
    for i, cell in enumerate(nb.cells):
        if _is_run_tests_cell(cell):
            m = None
            for m in SUMMARY.finditer(_text(cell)):
                pass
            out.append((i, {k: int(v or 0) for k, v in m.groupdict().items()} if m else None))
    return out


def _show(nb, i) -> str:
    return f"cell {i}:\n{nb.cells[i].source}\n--- output:\n{_text(nb.cells[i])}{_text(nb.cells[i], 'stderr')}"


@pytest.mark.parametrize("mod", _params())
def test_reference_notebook_in_a_kernel_prints_passing_summaries(mod):
    nb = execute(mod.notebook, mod.notebook.parent, allow_errors=False)    # a failing cell raises here
    found = summaries(nb)
    assert found, (f"{PROJECT.rel(mod.notebook)} has no run_tests(...) cell: in Jupyter its tests never run. "
                   "Add one after each group of tests (from tito.notebook import run_tests).")
    for i, counts in found:
        assert counts is not None, f"the run_tests cell printed no summary\n{_show(nb, i)}"
        assert counts["n"] > 0 and counts["failed"] == counts["todo"] == 0, _show(nb, i)
        assert counts["passed"] > 0, _show(nb, i)


@pytest.mark.parametrize("mod", _params())
def test_learner_copy_in_a_kernel_prints_failing_summaries(mod, tmp_path):
    stub, _ = make_stub(mod.notebook.read_text(encoding="utf-8"), mod, PROJECT.rel(mod.notebook))
    folder = tmp_path / "workspace" / mod.slug                # where `tito module start` puts it
    folder.mkdir(parents=True)
    (folder / mod.notebook.name).write_text(stub, encoding="utf-8")
    nb = execute(folder / mod.notebook.name, folder, allow_errors=True)
    found = summaries(nb)
    assert found, f"{PROJECT.rel(mod.notebook)} has no run_tests(...) cell"
    for i, counts in found:
        assert not _errors(nb.cells[i]), f"the run_tests cell raised {_errors(nb.cells[i])}\n{_show(nb, i)}"
        assert counts is not None, f"the run_tests cell printed no summary\n{_show(nb, i)}"
    # the last summary covers the stubs of the module: the learner sees what is left to write
    assert sum(c["failed"] + c["todo"] for _, c in found) > 0, "\n\n".join(_show(nb, i) for i, _ in found)
    last = found[-1][1]
    assert last["failed"] + last["todo"] > 0, _show(nb, found[-1][0])
    todo_lines = [l for i, _ in found for l in _text(nb.cells[i]).splitlines() if l.startswith("TODO  ")]
    assert todo_lines, "no test reports a stub as not implemented yet (TODO):\n\n" + \
        "\n\n".join(_show(nb, i) for i, _ in found)
    # Jupyter's "Run All" stops at the first cell that raises: it must come after the last run_tests cell
    raised = [i for i, cell in enumerate(nb.cells) if _errors(cell)]
    stops = [i for i in raised if i < found[-1][0]]
    if stops and mod.slug in STOPS_RUN_ALL:
        pytest.xfail(f"cell {stops[0]} raises on the stubbed copy: {_errors(nb.cells[stops[0]])[0][:200]}")
    assert not stops, (f"cell {stops[0]} raises on the stubbed copy, so Run All stops before the tests:\n"
                       f"{nb.cells[stops[0]].source}\n{_errors(nb.cells[stops[0]])}")
