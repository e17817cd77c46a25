"""Fail when a module under src/ grows past MAX_LINES lines: one line per offending file, nothing otherwise."""
from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 400
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    offenders = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        with path.open("rb") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {lines} lines (more than {MAX_LINES})")
    for line in offenders:
        print(line)
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
