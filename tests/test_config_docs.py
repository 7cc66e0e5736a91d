"""One name, one place: docs/config.md's field tables and the config's allowed values follow the code they describe."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from uniapl.algorithms import advantages, losses
from uniapl.config import AlgorithmConfig, RolloutConfig
from uniapl.config_docs import config_fields, marked_sections, render_doc, render_value, sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_every_config_field_has_help():
    missing = [f"{section}.{name}" for section, cls in sections().items()
               for name, f, _ in config_fields(cls) if not f.metadata.get("help", "").strip()]
    assert not missing, f"config fields without metadata={{'help': ...}}: {', '.join(missing)}"


def test_doc_marks_a_table_for_every_section():
    assert sorted(marked_sections(DOC.read_text())) == sorted(sections())


def test_doc_tables_are_rendered_from_the_config():
    doc = DOC.read_text()
    assert render_doc(doc) == doc, "docs/config.md's field tables differ from the config's help: run `python scripts/config_docs.py`"


@pytest.mark.parametrize(
    "value, shown",
    [(None, "null"), (True, "true"), (4, "4"), (1.0, "1.0"), (1e-6, "1e-6"), ("auto", "`auto`"), (["q_proj", "v_proj"], "`[q_proj, v_proj]`")],
)
def test_defaults_read_as_yaml(value, shown):
    assert render_value(value) == shown


# ---- allowed values against the registries that implement them ------------------------------------


def allowed(cls: type, name: str) -> set[str]:
    """The values of a Literal config field."""
    return set(typing.get_args(typing.get_type_hints(cls)[name]))


@pytest.mark.parametrize(
    "field_name, registry",
    [
        ("loss_aggregation", losses.AGGREGATIONS),
        ("advantage", advantages.ADVANTAGES),
        ("sft_token_weighting", losses.SFT_TOKEN_WEIGHTINGS),
    ],
)
def test_algorithm_choices_are_the_registered_names(field_name, registry):
    # the registries import torch, which config.py does not, so the Literal repeats their names and this holds them equal
    assert allowed(AlgorithmConfig, field_name) == set(registry)


def test_rollout_engines_are_the_registered_ones_plus_auto():
    from uniapl.generation import ENGINES

    assert allowed(RolloutConfig, "engine") == set(ENGINES) | {"auto"}


def test_anchor_choices_are_the_registered_transforms_and_the_variants():
    from uniapl.algorithms.anchoring import ANCHOR_TRANSFORMS
    from uniapl.anchor.settings import VARIANTS
    from uniapl.config import AnchorConfig

    assert allowed(AnchorConfig, "transform") == set(ANCHOR_TRANSFORMS)
    optional_variant = typing.get_type_hints(AnchorConfig)["variant"]  # Optional[Literal[...]]: null is allowed too
    assert set(typing.get_args(typing.get_args(optional_variant)[0])) == set(VARIANTS)
