"""The paper's "discriminator variants" analysis: for each of AAPA's fixed discriminators, its held-out AUC and its
score distributions on expert responses, on the start policy's responses and on a trained policy's responses.

The start policy's scores are the discriminator's own held-out negatives (its folder's heldout.jsonl), the expert's
and the policy's are those of the analysis: the held-out demonstrations and the model's samples on their prompts. A
policy that the anchoring term pulled toward the expert scores between the start policy and the expert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from uniapl.analysis.distributions import compare_samples, summarize
from uniapl.errors import UniaplError
from uniapl.io import read_json, read_jsonl, write_json_atomic

DISCRIMINATORS_JSON = "discriminators.json"
SIDES = ("expert", "start_policy", "policy")


def histogram_file(name: str) -> str:
    return f"discriminator_{name}_hist.png"


def discriminator_analysis(folders: Sequence[str | Path], prompts: Sequence[str], expert: Sequence[str], policy: Sequence[str],
                           out_dir: Path) -> dict:
    """Score the expert's and the policy's responses with each discriminator; write discriminators.json and a
    histogram per discriminator into `out_dir`."""
    from uniapl.analysis.plots import score_histogram
    from uniapl.anchor.folder import HELDOUT_FILE, REPORT_FILE, load_discriminator

    results = {}
    for folder in map(Path, folders):
        name = folder.name
        model = load_discriminator(folder, field_name="--discriminator")
        report = read_json(folder / REPORT_FILE)
        heldout = read_jsonl(folder / HELDOUT_FILE)
        scores = {"expert": model.score(prompts, expert).tolist(), "policy": model.score(prompts, policy).tolist(),
                  "start_policy": [row["logit"] for row in heldout if row["label"] == 0]}
        results[name] = {
            "folder": str(folder), "variant": report["variant"], "granularity": report["settings"]["granularity"],
            "include_prompt": report["settings"]["include_prompt"], "heldout_auc": report["auc"],
            "heldout_accuracy": report["accuracy"],
            "scores": {side: summarize(scores[side]) for side in SIDES},
            "policy_vs_expert": compare_samples(scores["policy"], scores["expert"])["distance"],
            "start_policy_vs_expert": compare_samples(scores["start_policy"], scores["expert"])["distance"],
        }
        score_histogram(scores, f"{name} ({report['variant']}, held-out AUC {report['auc']:.3f})", out_dir / histogram_file(name))
    write_json_atomic(out_dir / DISCRIMINATORS_JSON, results)
    return results


def analyze_discriminators(analysis_dir: str | Path, folders: Sequence[str | Path], expert_file: str | Path,
                           prompts_file: str | Path | None = None, limit: int | None = None) -> dict:
    """The analysis of `analysis_dir` (its samples and the expert's demonstrations), scored by each discriminator."""
    from uniapl.analysis.analyze import ANALYSIS_JSON, RESPONSES_JSONL
    from uniapl.analysis.expert_rows import load_expert_examples

    analysis_dir = Path(analysis_dir)
    if not (analysis_dir / ANALYSIS_JSON).is_file():
        raise UniaplError(f"{analysis_dir}: no finished analysis ({ANALYSIS_JSON}) whose responses the discriminators could score")
    if not (analysis_dir / RESPONSES_JSONL).is_file():
        raise UniaplError(f"{analysis_dir}: the analysis's samples ({RESPONSES_JSONL}) are missing, so the discriminators have "
                          f"nothing to score; delete {ANALYSIS_JSON} there to analyze the model again")
    responses = {row["key"]: row["response"] for row in read_jsonl(analysis_dir / RESPONSES_JSONL)}
    examples = [e for e in load_expert_examples(expert_file, prompts_file, limit) if e.key in responses]
    return discriminator_analysis(folders, [e.prompt_text for e in examples], [e.expert_response for e in examples],
                                  [responses[e.key] for e in examples], analysis_dir)
