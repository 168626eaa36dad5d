"""A pytest plugin tito loads (``-p tito._pytest_watch``) to tell which test hung.

With ``TITO_WATCH`` set to a path prefix, each pytest process writes what it is
doing (``collecting <file>`` / ``running <test id>``) to ``<prefix>.<pid>``, and
dumps its Python stack to ``<prefix>.<pid>.stack`` on SIGUSR1, so that after a
time limit ``tito`` can name the test and the line it was stuck on.
"""
import faulthandler
import os
import signal

_PREFIX = os.environ.get("TITO_WATCH")
_stack = None


def _note(text: str) -> None:
    if not _PREFIX:
        return
    try:
        with open(f"{_PREFIX}.{os.getpid()}", "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def pytest_configure(config):
    global _stack
    if _PREFIX and hasattr(signal, "SIGUSR1"):
        _stack = open(f"{_PREFIX}.{os.getpid()}.stack", "w", encoding="utf-8")
        faulthandler.register(signal.SIGUSR1, file=_stack, all_threads=False)


def pytest_collectstart(collector):
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".py":
        _note(f"collecting {collector.nodeid}")


def pytest_runtest_logstart(nodeid, location):
    _note(f"running {nodeid}")


def pytest_runtest_logfinish(nodeid, location):
    _note(f"finished {nodeid}")
