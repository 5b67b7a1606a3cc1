"""The command line the docs generators share (scripts/gen_*.py): rewrite the generated
parts of one page, or with ``--check`` exit 1 when the page is stale.

Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rewrite_or_check(argv: list[str] | None, *, description: str, page: Path, script: str,
                     wanted: Callable[[str], str], new_page: bool = False) -> int:
    """Parse ``--check``; write ``wanted(page text)`` to ``page``, or only compare it.

    ``script`` is the generator's file (named in the stale message); ``new_page`` lets a
    missing page start empty instead of failing.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    current = "" if new_page and not page.exists() else page.read_text()
    new = wanted(current)
    if args.check:
        if new != current:
            print(f"{page.relative_to(ROOT)} is stale: run "
                  f"{Path(script).resolve().relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    page.write_text(new)
    return 0
