"""docs/config.md's field tables, rendered from each config field's help, so the doc says what the code does.

A table stands between `<!-- fields:SECTION -->` and `<!-- /fields:SECTION -->`, one row a field, a nested
section's fields dotted (`lora.r`). `scripts/config_docs.py` rewrites them; a test holds the doc equal to them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from typing import Any, Iterator

import yaml

from uniapl.config import UniAPLConfig

TABLE = re.compile(r"(<!-- fields:(?P<section>\w+) -->\n).*?(<!-- /fields:(?P=section) -->)", re.DOTALL)


def sections() -> dict[str, type]:
    """Each top-level section's dataclass; `rewards` is a list of one."""
    hints = typing.get_type_hints(UniAPLConfig)
    return {name: _item_type(tp) for name, tp in hints.items()}


def _item_type(tp: Any) -> type:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp


def config_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, bool]]:
    """(dotted name, field, whether it is a nested section) for each field of `cls` and of its nested sections."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        nested = dataclasses.is_dataclass(hints[f.name])
        yield prefix + f.name, f, nested
        if nested:
            yield from config_fields(hints[f.name], f"{prefix}{f.name}.")


def render_value(value: Any) -> str:
    """A default as YAML writes it, so that it reads as what a config file says: null, true, 1e-6, `token_mean`."""
    if isinstance(value, float):
        return re.sub(r"e(-?)0(\d)", r"e\1\2", repr(value))  # 1e-06 -> 1e-6
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("...\n").strip()
    return f"`{text}`" if isinstance(value, (str, list)) else text


def render_default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        return render_value(f.default_factory())
    if f.default is dataclasses.MISSING:
        return "required"
    return render_value(f.default)


def render_table(cls: type) -> str:
    """The `| field | default | meaning |` table of a section: a row for each field, nested ones dotted."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for name, f, nested in config_fields(cls):
        if not nested:
            help_text = f.metadata["help"].replace("|", "\\|")
            rows.append(f"| `{name}` | {render_default(f)} | {help_text} |")
    return "\n".join(rows) + "\n"


def marked_sections(doc: str) -> list[str]:
    """The sections whose tables `doc` marks, in its order."""
    return [match["section"] for match in TABLE.finditer(doc)]


def render_doc(doc: str) -> str:
    """`doc` with each marked table rendered afresh from the config and everything else as it was."""
    tables = {name: render_table(cls) for name, cls in sections().items()}

    def rendered(match: re.Match) -> str:
        if match["section"] not in tables:
            raise ValueError(f"<!-- fields:{match['section']} --> names no config section; sections: {', '.join(tables)}")
        # blank lines around the table, so that no renderer reads a marker as one of its rows
        return f"{match[1]}\n{tables[match['section']]}\n{match[3]}"

    return TABLE.sub(rendered, doc)
