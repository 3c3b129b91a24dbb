"""Write the settings and hooks tables of docs/configuration.md from Config's field metadata.

    python scripts/config_doc.py          rewrite the tables in place
    python scripts/config_doc.py --check  exit 1 (and say which) if the doc is not what the code says

The tables sit between ``<!-- generated: NAME -->`` and ``<!-- end generated -->`` lines; the prose
around them is written by hand.  tests/tooling/test_docs.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from relay._config import hooks_markdown, settings_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
TABLES = {"settings": settings_markdown, "hooks": hooks_markdown}
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code makes now."""
    found = set()

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{DOC}: unknown generated block {name!r}")
        found.add(name)
        return match.group(1) + TABLES[name]() + match.group(4)

    result = _BLOCK.sub(replace, text)
    missing = sorted(set(TABLES) - found)
    if missing:
        raise SystemExit(f"{DOC}: no generated block for {', '.join(missing)}")
    return result


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    wanted = render(text)
    if argv == ["--check"]:
        if text != wanted:
            print(f"{DOC} is out of date: run python scripts/config_doc.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
