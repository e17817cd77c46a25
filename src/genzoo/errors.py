"""The one exception type for anything a user can get wrong.

The command line prints a `GenzooError` as one sentence on stderr and exits non-zero;
every other exception is a bug in genzoo and keeps its traceback.
"""


class GenzooError(Exception):
    """A mistake in input, data, configuration or files, described in one sentence."""


class Interrupted(GenzooError):
    """The user stopped the work (Ctrl-C); the command line exits with 130, as shells expect."""
