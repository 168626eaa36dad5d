"""Fixtures for the tito tests (see tests/helpers.py)."""
import pytest

from tests.helpers import write_project

@pytest.fixture
def project(tmp_path):
    """A fixture project (not yet exported)."""
    return write_project(tmp_path / "proj")


@pytest.fixture
def exported(project):
    """A fixture project after `tito export`."""
    from tito.export import export
    export(root=project)
    return project


@pytest.fixture
def in_project(project, monkeypatch):
    """Run with the fixture project as the current folder (and on PYTHONPATH)."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("PYTHONPATH", str(project))
    return project


@pytest.fixture
def cli():
    """Invoke tito's CLI in-process; returns the click Result."""
    from typer.testing import CliRunner
    from tito.cli import app
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return run
