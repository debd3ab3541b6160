"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


class SmallbenchError(Exception):
    """A problem with the user's input or environment, reported as ``error: <message>`` and exit 2."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """Collapse an exception into a single line (first non-empty line of its message)."""
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    name = type(exc).__name__
    if isinstance(exc, SmallbenchError):
        return first or name
    return f"{name}: {first}" if first else name
