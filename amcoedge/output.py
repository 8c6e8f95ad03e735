"""How every command prints JSON: to stdout, and to a file when one is named."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit_json(obj: Any, path: str | Path | None = None, *, indent: int = 2) -> bool:
    """Print ``obj`` as JSON; also write it to ``path`` (``None`` or ``"-"``: stdout only).

    Returns False, with a message on stderr, when the file cannot be written; the JSON is
    printed either way so that a run's figures are never lost.
    """
    text = json.dumps(obj, indent=indent)
    print(text)
    if path is None or str(path) == "-":
        return True
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    except OSError as exc:
        print(f"error: cannot write {target}: {exc}", file=sys.stderr)
        return False
    return True
