"""The one exception type for anything a user can get wrong.

The command line prints a `GenzooError` as one sentence on stderr and exits non-zero;
every other exception is a bug in genzoo and keeps its traceback.
"""


class GenzooError(Exception):
    """A mistake in input, data, configuration or files, described in one sentence."""


class Interrupted(GenzooError):
    """The user stopped the work (Ctrl-C); the command line exits with 130, as shells expect."""


INSTALL = "python3 -m pip install -c constraints.txt -e ."


def require(modules: tuple[str, ...], command: str, install: str = INSTALL) -> None:
    """Refuse, in one sentence with the install command, to start `command` when a module it
    needs does not import: checked when the command starts, never after its work."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise GenzooError(f"{command} needs {', '.join(missing)}, which is not installed here; "
                          f"install it with `{install}` from a clone of genzoo.")
