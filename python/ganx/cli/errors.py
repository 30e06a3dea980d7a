"""The error every command raises for a mistake in what the user asked for."""

__all__ = ["UserError"]


class UserError(Exception):
    """An error in what the user asked for: printed as ``ganx COMMAND: error: ...`` without a
    traceback, exit status 2."""
