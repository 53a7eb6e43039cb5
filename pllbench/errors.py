"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

import errno


class PllbenchError(Exception):
    """A problem the user can fix: the message names it and says how."""


def exception_text(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def os_error_message(exc: OSError, where=None) -> str:
    """One line for an operating-system refusal (full disk, no permission, ...): the problem, the path, the fix.

    `where` names the path when the error carries none (a failed write() or fsync() does not say which file).
    """
    path = exc.filename or where
    at = f" ({path})" if path else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full{at}; free some space and rerun the same command (finished work is kept, "
                f"interrupted runs resume from their last checkpoint)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"permission denied{at}; make it writable, or pass --runs / --cache-dir with a folder you can write, "
                f"then rerun")
    return f"{exc.strerror or exc}{at}; fix the path (or free the resource) and rerun the same command"
