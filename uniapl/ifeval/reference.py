"""The reference IFEval scorer (lm-eval's `ifeval` task), imported only once punkt_tab is in place."""

from __future__ import annotations

import contextlib
import random
from types import ModuleType

from uniapl.ifeval.punkt_data import ensure_punkt_tab

# langdetect (the response_language and english_capital checkers) samples at random unless seeded, so
# the same response could score differently twice; a fixed seed makes every score reproducible
LANGDETECT_SEED = 0


@contextlib.contextmanager
def seeded_global_random(seed: int):
    """Seed the global `random` (which the reference instruction classes draw from), then restore it."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _seed_langdetect() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = LANGDETECT_SEED


def reference_utils() -> ModuleType:
    """`lm_eval.tasks.ifeval.utils`: process_results, agg_inst_level_acc and the checkers."""
    ensure_punkt_tab()
    _seed_langdetect()
    from lm_eval.tasks.ifeval import utils

    return utils


def reference_registry() -> ModuleType:
    """`lm_eval.tasks.ifeval.instructions_registry`: INSTRUCTION_DICT and INSTRUCTION_CONFLICTS."""
    ensure_punkt_tab()
    from lm_eval.tasks.ifeval import instructions_registry

    return instructions_registry
