"""Measure one model against expert demonstrations on held-out prompts.

The paper reports that UniAPL's response lengths and log-probabilities come out close to the
expert's. This module measures exactly that, plus the signs that a policy games its reward instead
(echo, loops, truncation, empty answers), and writes every number to JSON and two PNG histograms.

Lengths count completion tokens including the EOS token: the policy's samples end with the EOS it
generated (a truncated sample has none), and the expert's text is tokenized and given the EOS the
chat model would emit. Log-probs are teacher-forced at temperature 1 for both, per response as the
mean over its tokens, so the expert's mean is minus the constraint C of the method (its NLL).

A finished analysis is not redone: asking again with the same model, data and settings returns the
saved one, and asking with others into the same folder is refused rather than overwriting it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from uniapl.analysis.distributions import compare_samples
from uniapl.analysis.expert_rows import ExpertExample, load_expert_examples
from uniapl.config import flatten
from uniapl.errors import UniaplError
from uniapl.generation import SamplingParams, encode_prompts, generate, sequence_seed
from uniapl.ifeval.runner import DEFAULT_ENGINE
from uniapl.io import read_json, write_json_atomic, write_jsonl_atomic
from uniapl.rewards import WeightedReward, call_reward, resolve_reward

ANALYSIS_JSON = "analysis.json"
LENGTH_PNG = "length_hist.png"
LOGPROB_PNG = "logprob_hist.png"
RESPONSES_JSONL = "responses.jsonl"


@dataclass(frozen=True)
class AnalysisSettings:
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=512))
    seed: int = 0
    batch_size: int = 8
    dtype: str = "fp32"
    limit: int | None = None
    reward: str | None = None  # a verifier (e.g. ifeval_strict) for the optional pass rate
    engine: str = DEFAULT_ENGINE  # the sampling loop (a key of uniapl.generation.ENGINES); log-probs are the model's own


def recorded_settings(settings: AnalysisSettings) -> dict:
    """The settings as analysis.json records them: the default engine is left out, as in evaluation, so that analyses
    made before engines were a choice still match."""
    recorded = asdict(settings)
    if recorded["engine"] == DEFAULT_ENGINE:
        del recorded["engine"]
    return recorded


def default_out_dir(model: str) -> Path:
    """Next to a local model folder; under ./analysis/<alias> for an alias or hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path / "analysis"
    return Path("analysis") / model.replace("/", "__")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def verifier_scores(verifier: WeightedReward, examples: list[ExpertExample], responses: list[str]) -> dict:
    """Mean score and pass rate (score of 1) of a reward function; rows it does not apply to are left out."""
    columns = {name: [e.columns.get(name) for e in examples] for name in {k for e in examples for k in e.columns}}
    scores = _present(call_reward(verifier, [e.prompt for e in examples], list(responses), columns, [e.key for e in examples]))
    return {
        "n_scored": len(scores),
        "mean_score": _mean(scores),
        "pass_rate": _mean([float(s >= 1.0) for s in scores]),
    }


def _request(model_name: str, expert_file: str | Path, prompts_file: str | Path | None, settings: AnalysisSettings) -> dict:
    """What an analysis was asked to do, as saved in its JSON (a JSON round trip, so it compares with a saved one)."""
    return json.loads(json.dumps({
        "model": model_name,
        "expert_file": str(expert_file),
        "prompts_file": str(prompts_file) if prompts_file else None,
        "settings": recorded_settings(settings),
    }))


def saved_analysis(model_name: str, expert_file: str | Path, out_dir: str | Path, prompts_file: str | Path | None = None,
                   settings: AnalysisSettings = AnalysisSettings()) -> dict | None:
    """The finished analysis in `out_dir` if it answers the same request, None if there is none; one made with
    other settings is an error, so a second analysis never overwrites the first."""
    path = Path(out_dir) / ANALYSIS_JSON
    if not path.is_file():
        return None
    saved = read_json(path)
    request = _request(model_name, expert_file, prompts_file, settings)
    old, new = flatten({k: saved.get(k) for k in request}), flatten(request)
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    if changed:
        raise UniaplError(f"{path} holds an analysis made with other settings {changed} (old, new); "
                          f"pass another --out or delete that file to analyze again")
    return saved


def analyze_model(model_name: str, expert_file: str | Path, out_dir: str | Path, prompts_file: str | Path | None = None, settings: AnalysisSettings = AnalysisSettings()) -> dict:
    """Sample the policy on held-out prompts, score both sides, and write the samples, the PNGs and, last, analysis.json."""
    from uniapl.analysis.plots import overlaid_histogram
    from uniapl.models import load_model_and_tokenizer
    from uniapl.textstats import degeneration_summary
    from uniapl.train.sequences import completion_logprobs

    saved = saved_analysis(model_name, expert_file, out_dir, prompts_file, settings)
    if saved is not None:
        return saved
    examples = load_expert_examples(expert_file, prompts_file, settings.limit)
    verifier = WeightedReward(settings.reward, resolve_reward(settings.reward), 1.0) if settings.reward else None  # a bad name fails before sampling
    model, tokenizer = load_model_and_tokenizer(model_name, settings.dtype)
    if tokenizer.eos_token_id is None:
        raise UniaplError(f"model '{model_name}': the tokenizer has no EOS token to end the expert's responses with")
    prompt_ids = encode_prompts(tokenizer, [e.prompt for e in examples])
    seeds = [sequence_seed(settings.seed, 0, i) for i in range(len(examples))]
    started = time.perf_counter()
    samples = generate(model, tokenizer, prompt_ids, settings.sampling, seeds, settings.batch_size, engine=settings.engine)
    sampled = time.perf_counter()

    expert_ids = [tokenizer(e.expert_response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for e in examples]
    pad_id = tokenizer.pad_token_id
    policy_logprobs = completion_logprobs(model, prompt_ids, [s.completion_ids for s in samples], pad_id, batch_size=settings.batch_size)
    expert_logprobs = completion_logprobs(model, prompt_ids, expert_ids, pad_id, batch_size=settings.batch_size)
    policy_mean_logprob = [_mean(lp) for lp in policy_logprobs]
    expert_mean_logprob = [_mean(lp) for lp in expert_logprobs]
    scored = time.perf_counter()

    policy_texts = [s.text for s in samples]
    prompt_texts = [e.prompt_text for e in examples]
    policy_lengths = [len(s.completion_ids) for s in samples]
    expert_lengths = [len(ids) for ids in expert_ids]
    expert_logprob_mean = _mean(_present(expert_mean_logprob))
    result = {
        **_request(model_name, expert_file, prompts_file, settings),
        "n_prompts": len(examples),
        "length_tokens": compare_samples(policy_lengths, expert_lengths),
        "mean_token_logprob": compare_samples(_present(policy_mean_logprob), _present(expert_mean_logprob)),
        "expert_nll": -expert_logprob_mean if expert_logprob_mean is not None else None,
        "degeneration": {
            "policy": degeneration_summary(prompt_texts, policy_texts, [s.truncated for s in samples]),
            "expert": degeneration_summary(prompt_texts, [e.expert_response for e in examples], [False] * len(examples)),
        },
        # where an analysis's time goes, for the compute accounts of a grid (scripts/repro/compute.py)
        "seconds": {"sampling": sampled - started, "scoring": scored - sampled},
    }
    if verifier is not None:
        result["verifier"] = {
            "reward": settings.reward,
            "policy": verifier_scores(verifier, examples, policy_texts),
            "expert": verifier_scores(verifier, examples, [e.expert_response for e in examples]),
        }

    out_dir = Path(out_dir)
    write_jsonl_atomic(
        out_dir / RESPONSES_JSONL,
        [
            {"key": e.key, "response": s.text, "length_tokens": n, "truncated": s.truncated, "mean_token_logprob": lp, "expert_mean_token_logprob": elp}
            for e, s, n, lp, elp in zip(examples, samples, policy_lengths, policy_mean_logprob, expert_mean_logprob)
        ],
    )
    overlaid_histogram(result["length_tokens"], "Response length", "completion tokens (incl. EOS)", out_dir / LENGTH_PNG)
    overlaid_histogram(
        result["mean_token_logprob"],
        "Per-token log-prob under the policy",
        "mean log-prob per token of each response",
        out_dir / LOGPROB_PNG,
    )
    write_json_atomic(out_dir / ANALYSIS_JSON, result)  # last: its presence means the analysis is complete
    return result
