"""The one exception type for anything a user can get wrong.

The command line prints a `GenzooError` as one sentence on stderr and exits non-zero;
every other exception is a bug in genzoo and keeps its traceback.
"""


class GenzooError(Exception):
    """A mistake in input, data, configuration or files, described in one sentence."""


class Interrupted(GenzooError):
    """The user stopped the work (Ctrl-C); the command line exits with 130, as shells expect."""


INSTALL = "python3 -m pip install -c constraints.txt -e ."


def out_of_memory(error: BaseException) -> str | None:
    """One sentence for an allocation that failed (torch's CPU and CUDA allocators raise RuntimeErrors,
    Python a MemoryError), with the size asked for where the allocator says it; None for other errors."""
    import re

    text = str(error)
    if not isinstance(error, MemoryError) and not re.search(r"out of memory|can't allocate memory|not enough memory",
                                                            text, re.IGNORECASE):
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    size = (f"{int(asked.group(1)) / 2 ** 30:.2f} GiB" if asked else
            (re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text) or [None, None])[1])
    return ("out of memory" + (f": one allocation asked for {size}" if size else "") +
            "; try a smaller --batch-size (or --val-batch-size), or a smaller model.")


def require(modules: tuple[str, ...], command: str, install: str = INSTALL) -> None:
    """Refuse, in one sentence with the install command, to start `command` when a module it
    needs does not import: checked when the command starts, never after its work."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise GenzooError(f"{command} needs {', '.join(missing)}, which is not installed here; "
                          f"install it with `{install}` from a clone of genzoo.")
