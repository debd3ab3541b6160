"""Work a cell does before it measures anything (random weights written, a conversion, a quantization), run in a
Python process of its own. What that work leaves behind (a library imported, a heap grown to the model's size)
stays out of the measured process, whose peak memory would otherwise depend on whether a cache was warm; and a
native crash there is one line here.

``python -m smallbench.apart MODULE:FUNCTION JSON_KWARGS`` is the child's side.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import traceback
from typing import Any

from smallbench.errors import SmallbenchError, one_line

#: How the child hands its error line back (its other output is the parent's log).
MARK = "smallbench-apart-error: "
#: The child's exit code for a SmallbenchError: its message is the user's line as it stands.
BAD_INPUT = 2


def run_apart(target: str, what: str, **kwargs: Any) -> None:
    """Call ``module:function(**kwargs)`` (JSON arguments) in a fresh Python process and wait for it. Its output goes
    to this process's stderr (a cell's log). A SmallbenchError there is raised here with its own message; any other
    failure, a signal included, as ``what``: the reason."""
    proc = subprocess.run([sys.executable, "-m", "smallbench.apart", target, json.dumps(kwargs)],
                          capture_output=True, text=True)
    sys.stderr.write(proc.stdout + "".join(ln + "\n" for ln in proc.stderr.splitlines() if not ln.startswith(MARK)))
    if proc.returncode == 0:
        return
    said = [ln.removeprefix(MARK) for ln in proc.stderr.splitlines() if ln.startswith(MARK)]
    if said and proc.returncode == BAD_INPUT:
        raise SmallbenchError(said[-1])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    why = (said[-1] if said else f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else lines[-1] if lines else f"exit code {proc.returncode}")
    raise SmallbenchError(f"{what} failed: {why}")


def _main(target: str, kwargs: str) -> int:
    module, function = target.split(":")
    try:
        getattr(importlib.import_module(module), function)(**json.loads(kwargs))
    except SmallbenchError as exc:
        print(MARK + str(exc), file=sys.stderr)
        return BAD_INPUT
    except Exception as exc:
        traceback.print_exc()
        print(MARK + one_line(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
