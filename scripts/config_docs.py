"""Rewrite the field tables of docs/config.md from the help of each config field (uniapl/config.py).

    python scripts/config_docs.py
"""

from __future__ import annotations

from pathlib import Path

from uniapl.config_docs import render_doc

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def main() -> None:
    doc = DOC.read_text()
    rendered = render_doc(doc)
    if rendered == doc:
        print(f"{DOC}: up to date")
        return
    DOC.write_text(rendered)
    print(f"{DOC}: tables rewritten")


if __name__ == "__main__":
    main()
