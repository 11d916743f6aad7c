"""upx's own errors: what the ``upx`` command reports as one line (exit 2), not a traceback.

Each kind also derives from the built-in error that Python code already catches for it
(``UserInputError`` is a ValueError, ``SetupError`` a RuntimeError), so a caller's
``except ValueError`` keeps working. The command no longer catches every RuntimeError
(:data:`upx_core.cli.EXPECTED_ERRORS`): one raised by torch itself is a bug, and keeps its
traceback; upx's own RuntimeErrors are these.
"""

from __future__ import annotations

__all__ = ["UPXError", "UserInputError", "SetupError", "RankFailedError"]


class UPXError(Exception):
    """An error upx raised on purpose, with a message that says what to do."""


class UserInputError(UPXError, ValueError):
    """A flag, file or value the user gave cannot work; the message names it."""


class SetupError(UPXError, RuntimeError):
    """Something upx needs is missing or damaged here: a package, a download, a resource file."""


class RankFailedError(UPXError, RuntimeError):
    """Under torchrun, another rank failed (its own error is on its output)."""
