"""Read the tables of a report.md back, so tests compare cells with the JSON the report was made from."""

from __future__ import annotations

import re


def markdown_tables(text: str) -> list[tuple[list[str], dict[str, list[str]]]]:
    """Each table as (header, {first cell: row}); cells are unescaped."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif block:
            header, rows = block[0], block[2:]
            tables.append((header, {row[0]: row for row in rows}))
            block = []
    return tables


def table_with(text: str, column: str, index: int = 0) -> tuple[list[str], dict[str, list[str]]]:
    matching = [t for t in markdown_tables(text) if column in t[0]]
    return matching[index]


def cell(table, run: str, column: str) -> str:
    header, rows = table
    return rows[run][header.index(column)]
