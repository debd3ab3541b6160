"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


class SmallbenchError(Exception):
    """A problem with the user's input or environment, reported as ``error: <message>`` and exit 2."""

    exit_code = 2


class Stopped(SmallbenchError):
    """A run stopped by SIGINT or SIGTERM: exit 128 + the signal, as a shell reports a process it killed."""

    def __init__(self, signal_name: str, number: int) -> None:
        super().__init__(f"interrupted by {signal_name}: finished cells are kept; the same command resumes the run "
                         "(only cells without a good record run again)")
        self.exit_code = 128 + number


def one_line(exc: BaseException) -> str:
    """Collapse an exception into a single line (first non-empty line of its message)."""
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    name = type(exc).__name__
    if isinstance(exc, SmallbenchError):
        return first or name
    return f"{name}: {first}" if first else name
