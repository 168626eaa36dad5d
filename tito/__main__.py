"""Entry point of ``tito`` and ``python -m tito``.

Ctrl-C while the command line is still starting up, or a tool that is not installed, ends with a
one-line message instead of a traceback."""
import sys

# The modules of the 'toolchain' extra, which tito export / test / module need (tito train does not).
TOOLCHAIN = {"nbdev", "execnb", "fastcore", "ghapi", "jupytext", "pytest", "xdist", "hypothesis", "nbformat"}


def _typer_swallowed_ctrl_c(exc):
    "Whether this exit is typer turning a KeyboardInterrupt into a silent exit 130 (raise Exit(130) from it)."
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False


def main():
    try:
        from .cli import main as cli_main
        cli_main()
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130 and _typer_swallowed_ctrl_c(e):      # Ctrl-C while typer parsed the flags: it exits silently
            sys.stderr.write("\nInterrupted.\n")
        raise
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        command = " ".join(a for a in sys.argv[1:3] if not a.startswith("-")) or "this command"
        if top in TOOLCHAIN:
            sys.stderr.write(f"tito {command} needs the development toolchain, which is not installed (no module "
                             f"named {top!r}). Install it: pip install 'tinytorch[toolchain]' (in a clone: "
                             "pip install -e '.[toolchain]')\n")
        elif top in ("typer", "rich", "click", "numpy"):
            sys.stderr.write(f"tito needs {top}, which is not installed: pip install tinytorch (or pip install {top})\n")
        else:
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
