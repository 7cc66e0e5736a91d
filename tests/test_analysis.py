"""`uniapl analyze`: the statistics against hand computations, row parsing, and a tiny end-to-end run
whose JSON is checked against lengths and log-probs the test computes itself."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from PIL import Image

from uniapl.analysis.analyze import default_out_dir, verifier_scores
from uniapl.analysis.distributions import compare_samples, distribution_distance, mean_and_standard_error, summarize
from uniapl.analysis.expert_rows import load_expert_examples
from uniapl.cli import main
from uniapl.errors import DataError
from uniapl.rewards import WeightedReward

MODEL = "tiny-random-smollm2"


def hand_wasserstein(a: list[float], b: list[float]) -> float:
    """Integral of |F_a - F_b| over the pooled support."""
    points = sorted(set(a) | set(b))
    cdf = lambda xs, x: sum(v <= x for v in xs) / len(xs)  # noqa: E731
    return sum(abs(cdf(a, x) - cdf(b, x)) * (nxt - x) for x, nxt in zip(points, points[1:]))


def hand_ks(a: list[float], b: list[float]) -> float:
    cdf = lambda xs, x: sum(v <= x for v in xs) / len(xs)  # noqa: E731
    return max(abs(cdf(a, x) - cdf(b, x)) for x in set(a) | set(b))


# --- pure statistics ---------------------------------------------------------------------------------


def test_summary_matches_statistics_module():
    values = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    summary = summarize(values)
    assert summary["n"] == 11
    assert summary["mean"] == pytest.approx(statistics.mean(values))
    assert summary["median"] == statistics.median(values)
    assert summary["p90"] == pytest.approx(statistics.quantiles(values, n=10, method="inclusive")[-1])
    assert (summary["min"], summary["max"]) == (1, 9)
    assert summarize([])["mean"] is None


@pytest.mark.parametrize(
    "policy, expert",
    [([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]), ([10, 10, 10, 40], [5, 20]), ([-1.2, -0.4, -3.0, -2.2, -0.9], [-2.0, -2.5, -1.1])],
)
def test_distances_match_hand_computations(policy, expert):
    distance = distribution_distance(policy, expert)
    assert distance["wasserstein_1"] == pytest.approx(hand_wasserstein(policy, expert))
    assert distance["ks_statistic"] == pytest.approx(hand_ks(policy, expert))
    assert 0 <= distance["ks_pvalue"] <= 1


def test_identical_samples_have_zero_distance_and_an_empty_side_has_none():
    assert distribution_distance([1, 2, 3], [3, 2, 1])["wasserstein_1"] == 0
    assert distribution_distance([], [1, 2])["wasserstein_1"] is None


def test_shared_histogram_counts_every_value_once():
    result = compare_samples([1, 2, 2, 9], [3, 3, 10], bins=4)
    histogram = result["histogram"]
    assert len(histogram["bin_edges"]) == 5
    assert (histogram["bin_edges"][0], histogram["bin_edges"][-1]) == (1, 10)
    assert histogram["policy_counts"] == [3, 0, 0, 1]
    assert histogram["expert_counts"] == [2, 0, 0, 1]


def test_mean_and_standard_error_leave_missing_values_out():
    values = [0.5, None, 0.7, 0.9]
    stats = mean_and_standard_error(values)
    assert stats["n"] == 3
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["stderr"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]) / 3**0.5)
    assert mean_and_standard_error([0.4])["stderr"] is None
    assert mean_and_standard_error([None])["mean"] is None


def test_verifier_scores_skip_rows_a_reward_does_not_apply_to(tmp_path):
    path = tmp_path / "expert.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "c", "level": i}) + "\n" for i in range(4)))
    examples = load_expert_examples(path)
    seen = {}

    def reward(prompts, completions, level, **kwargs):
        seen["level"] = level
        return [1.0, 0.0, None, 0.5]

    assert verifier_scores(WeightedReward("reward", reward, 1.0), examples, ["a", "b", "c", "d"]) == {"n_scored": 3, "mean_score": 0.5, "pass_rate": 1 / 3}
    assert seen["level"] == [0, 1, 2, 3]


def test_default_out_dir_is_beside_a_local_model_else_under_analysis(tmp_path):
    assert default_out_dir(str(tmp_path)) == tmp_path / "analysis"
    assert str(default_out_dir("smollm2-135m-instruct")) == "analysis/smollm2-135m-instruct"
    assert str(default_out_dir("org/model")) == "analysis/org__model"


# --- expert rows -------------------------------------------------------------------------------------


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_all_row_formats_are_read_and_unsolved_rows_skipped(tmp_path):
    path = write_rows(
        tmp_path / "mixed.jsonl",
        [
            {"key": "a", "prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}], "kwargs": [{}]},
            {"key": "b", "prompt": [{"role": "user", "content": "Unsolved"}], "kwargs": [{}]},
            {"prompt": "Plain prompt", "completion": "Plain answer"},
            {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        ],
    )
    examples = load_expert_examples(path)
    assert [e.expert_response for e in examples] == ["Hello", "Plain answer", "A"]
    assert examples[0].columns == {"kwargs": [{}]}
    assert examples[2].prompt == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Q"}]
    assert examples[2].prompt_text == "Q"


def test_prompts_file_selects_matching_rows_in_its_order(tmp_path):
    expert = write_rows(tmp_path / "expert.jsonl", [{"key": k, "prompt": k, "completion": k.upper()} for k in "abcd"])
    prompts = write_rows(tmp_path / "heldout.jsonl", [{"key": "c", "prompt": "c"}, {"key": "zz", "prompt": "zz"}, {"prompt": "a"}])
    assert [e.key for e in load_expert_examples(expert, prompts)] == ["c", "a"]
    assert [e.key for e in load_expert_examples(expert, prompts, limit=1)] == ["c"]


def test_a_bad_row_is_an_error_that_names_the_file_and_line(tmp_path):
    path = write_rows(tmp_path / "mixed.jsonl", [{"prompt": "ok", "completion": "ok"}, {"completion": "x"}])
    with pytest.raises(DataError, match="mixed.jsonl:2: the row has neither 'prompt' nor 'messages'"):
        load_expert_examples(path)


def test_a_file_without_demonstrations_is_an_error(tmp_path):
    path = write_rows(tmp_path / "unsolved.jsonl", [{"key": "a", "prompt": "p"}])
    with pytest.raises(DataError, match="no rows with an expert demonstration"):
        load_expert_examples(path)


# --- end to end on the tiny model ---------------------------------------------------------------------

EXPERT_ROWS = [
    ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky"),
    ("List three fruits.", "Apple, banana, cherry."),
    ("Say hello in French.", "Bonjour!"),
    ("Explain gravity in one sentence.", "Gravity is the force that pulls masses toward each other, and it keeps planets in orbit."),
    ("Name a color.", "Blue."),
]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    rows = [
        {"key": f"k{i}", "prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
        for i, (p, c) in enumerate(EXPERT_ROWS)
    ]
    rows.append({"key": "unsolved", "prompt": [{"role": "user", "content": "No demonstration here."}]})
    expert = write_rows(root / "expert.jsonl", rows)
    heldout = write_rows(root / "heldout.jsonl", [{"key": f"k{i}", "prompt": EXPERT_ROWS[i][0]} for i in (4, 0, 1, 3)])
    out = root / "out"
    argv = ["analyze", "--model", MODEL, "--expert", str(expert), "--prompts", str(heldout), "--out", str(out),
            "--max-new-tokens", "12", "--seed", "7", "--batch-size", "2", "--reward", "no_commas"]
    assert main(argv) == 0
    return {"out": out, "result": json.loads((out / "analysis.json").read_text()), "keys": [4, 0, 1, 3], "argv": argv}


@pytest.fixture(scope="module")
def independent(analyzed):
    """What the analysis should have found, computed here by direct forward passes."""
    from uniapl.generation import SamplingParams, encode_prompts, generate, sequence_seed
    from uniapl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(MODEL)
    examples = [EXPERT_ROWS[k] for k in analyzed["keys"]]
    prompt_ids = encode_prompts(tokenizer, [[{"role": "user", "content": p}] for p, _ in examples])
    samples = generate(model, tokenizer, prompt_ids, SamplingParams(max_new_tokens=12), [sequence_seed(7, 0, i) for i in range(len(examples))])
    expert_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for _, c in examples]

    def mean_logprob(prompt, completion):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, len(prompt):]
        return logp[len(prompt) - 1 :].gather(-1, targets[:, None]).mean().item()

    return {
        "samples": samples,
        "expert_lengths": [len(ids) for ids in expert_ids],
        "policy_logprob": [mean_logprob(p, s.completion_ids) for p, s in zip(prompt_ids, samples)],
        "expert_logprob": [mean_logprob(p, e) for p, e in zip(prompt_ids, expert_ids)],
    }


def test_lengths_match_directly_counted_tokens(analyzed, independent):
    length = analyzed["result"]["length_tokens"]
    policy_lengths = [len(s.completion_ids) for s in independent["samples"]]
    expert_lengths = independent["expert_lengths"]
    assert analyzed["result"]["n_prompts"] == 4
    assert length["policy"]["mean"] == pytest.approx(statistics.mean(policy_lengths))
    assert length["expert"]["mean"] == pytest.approx(statistics.mean(expert_lengths))
    assert length["expert"]["median"] == pytest.approx(statistics.median(expert_lengths))
    assert length["expert"]["p90"] == pytest.approx(statistics.quantiles(expert_lengths, n=10, method="inclusive")[-1])
    assert length["distance"]["wasserstein_1"] == pytest.approx(hand_wasserstein(policy_lengths, expert_lengths))
    assert length["distance"]["ks_statistic"] == pytest.approx(hand_ks(policy_lengths, expert_lengths))
    assert sum(length["histogram"]["expert_counts"]) == 4
    assert set(analyzed["result"]["seconds"]) == {"sampling", "scoring"}  # what scripts/repro/compute.py adds up
    assert all(seconds > 0 for seconds in analyzed["result"]["seconds"].values())


def test_logprobs_match_a_direct_forward_pass(analyzed, independent):
    logprob = analyzed["result"]["mean_token_logprob"]
    assert logprob["policy"]["mean"] == pytest.approx(statistics.mean(independent["policy_logprob"]), abs=1e-4)
    assert logprob["expert"]["mean"] == pytest.approx(statistics.mean(independent["expert_logprob"]), abs=1e-4)
    assert analyzed["result"]["expert_nll"] == pytest.approx(-statistics.mean(independent["expert_logprob"]), abs=1e-4)
    assert logprob["distance"]["wasserstein_1"] == pytest.approx(hand_wasserstein(independent["policy_logprob"], independent["expert_logprob"]), abs=1e-4)


def test_degeneration_and_verifier_match_the_samples(analyzed, independent):
    samples = independent["samples"]
    policy = analyzed["result"]["degeneration"]["policy"]
    assert policy["truncation_rate"] == pytest.approx(sum(s.truncated for s in samples) / len(samples))
    assert policy["empty_rate"] == pytest.approx(sum(not s.text.strip() for s in samples) / len(samples))
    verifier = analyzed["result"]["verifier"]
    assert verifier["policy"]["pass_rate"] == pytest.approx(sum("," not in s.text for s in samples) / len(samples))
    expert_texts = [EXPERT_ROWS[k][1] for k in analyzed["keys"]]
    assert verifier["expert"]["pass_rate"] == pytest.approx(sum("," not in t for t in expert_texts) / len(expert_texts))


def test_histograms_are_valid_non_trivial_pngs(analyzed):
    for name in ("length_hist.png", "logprob_hist.png"):
        path = analyzed["out"] / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size == (600, 350)
            assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 20


def test_a_finished_analysis_is_not_redone(analyzed, monkeypatch, capsys):
    import uniapl.models

    def no_model(*args, **kwargs):
        raise AssertionError("a finished analysis loaded the model again")

    monkeypatch.setattr(uniapl.models, "load_model_and_tokenizer", no_model)
    before = (analyzed["out"] / "analysis.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(analyzed["argv"]) == 0
    assert "already holds this analysis" in capsys.readouterr().out
    assert (analyzed["out"] / "analysis.json").stat().st_mtime_ns == before


def test_an_analysis_with_other_settings_is_refused_not_overwritten(analyzed, capsys):
    saved = (analyzed["out"] / "analysis.json").read_bytes()
    argv = list(analyzed["argv"])
    argv[argv.index("--seed") + 1] = "8"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "analysis.json holds an analysis made with other settings" in err and "'settings.seed': (7, 8)" in err
    assert (analyzed["out"] / "analysis.json").read_bytes() == saved


def test_the_default_engine_is_not_recorded_and_another_engine_is_other_settings(analyzed, capsys):
    """Analyses made before the engine was a choice match the default; one asked of another engine is not the same."""
    assert "engine" not in analyzed["result"]["settings"]
    capsys.readouterr()
    assert main([*analyzed["argv"], "--engine", "compiled"]) == 2
    assert "'settings.engine': (None, 'compiled')" in capsys.readouterr().err
