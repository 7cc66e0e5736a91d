"""AAPA: the fixed discriminator trained offline (variants, its folder, its errors) and the anchoring term in the
trainer (sft_aapa, grpo_aapa, chord_aapa, staged_aapa)."""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import chat_row, write_jsonl
from test_trainer import StopAfter, final_state, read_metrics
from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.algorithms import anchoring
from uniapl.algorithms.presets import PRESETS
from uniapl.anchor.fit import EXPERT, POLICY, LabelledResponse, fit_discriminator, split_by_prompt
from uniapl.anchor.folder import HEAD_FILE, load_discriminator
from uniapl.anchor.settings import DiscriminatorSettings, FitSettings
from uniapl.anchor.variants import build_discriminator, weights_sha256
from uniapl.cli import main
from uniapl.errors import ConfigError, DataError, IntegrityError, UniaplError
from uniapl.io import verify_manifest
from uniapl.train.anchor import AnchorScores
from uniapl.train.step import TrainingStep

# ---- the pure parts ---------------------------------------------------------------------------------


def test_roc_auc_counts_ordered_pairs_and_half_ties():
    # pairs (pos, neg): 3 beats 1, 2, 2 (3 wins); 2 beats 1 and ties 2, 2 (1 + 2 halves); 0 loses all -> 5 / 9
    auc = anchoring.roc_auc(torch.tensor([3.0, 2.0, 0.0]), torch.tensor([1.0, 2.0, 2.0]))
    assert auc == pytest.approx(5 / 9)
    assert anchoring.roc_auc(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0
    assert math.isnan(anchoring.roc_auc(torch.tensor([]), torch.tensor([1.0])))


def test_anchoring_transforms_and_sentence_means():
    logits = torch.tensor([5.0, -5.0, 0.0])
    assert anchoring.anchoring_reward(logits, "clip", 3.0).tolist() == [3.0, -3.0, 0.0]
    expected = [math.log(1 / (1 + math.exp(-5))), -3.0, math.log(0.5)]  # log sigmoid, floored at -3
    assert anchoring.anchoring_reward(logits, "log_sigmoid", 3.0).tolist() == pytest.approx(expected)
    means = anchoring.mean_by_owner(torch.tensor([1.0, 3.0, -2.0]), torch.tensor([0, 0, 2]), 3)
    assert means.tolist() == [2.0, 0.0, -2.0]


def test_the_anchoring_reward_enters_the_advantages_before_the_group_normalization(tiny_overrides):
    """grpo_aapa: r~ = r + alpha * clip(s, -c, c), normalized per group; sft_aapa: the anchoring reward alone."""
    task = torch.tensor([1.0, 0.0, 1.0, 1.0])
    logits = torch.tensor([2.0, -5.0, 0.5, -1.0])
    a = [2.0, -3.0, 0.5, -1.0]  # clipped at c = 3
    alpha = 0.5
    anchor = AnchorScores(logits, torch.zeros(0), anchoring.anchoring_reward(logits, "clip", 3.0), torch.zeros(0), alpha, None)
    for name, rewards in (("grpo_aapa", [t + alpha * x for t, x in zip(task.tolist(), a)]), ("sft_aapa", [alpha * x for x in a])):
        config = UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.name={name}", "algorithm.anchor.path=unused",
                                                                "rollout.num_generations=4"])
        context = SimpleNamespace(config=config, discriminator=None, processes=1, device=torch.device("cpu"))
        step = TrainingStep(context, config.components(name), 0, 2)
        layout = SimpleNamespace(rl=torch.ones(4, dtype=torch.bool))
        mean = sum(rewards) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / 3)  # unbiased, as TRL
        expected = [(x - mean) / (std + 1e-4) for x in rewards]
        assert step.advantages(task, layout, None, anchor).tolist() == pytest.approx(expected, abs=1e-6), name


# ---- the offline discriminator ----------------------------------------------------------------------

TOPICS = ["cats", "rain", "the sea", "trees", "music", "bread", "winter", "a city", "birds", "coffee", "books", "trains"]


def styled_rows(n: int, seed: int = 0) -> list[LabelledResponse]:
    """Expert answers are calm full sentences, policy answers sloppy shouting: separable by their words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        prompt = f"Write about {topic}, note {i}."
        rows.append(LabelledResponse(str(i), prompt, f"Here is a calm and careful note about {topic}. It is kind and clear.", EXPERT))
        rows.append(LabelledResponse(str(i), prompt, f"lol {topic} whatever man idk {topic} {topic}!!!", POLICY))
    return rows


VARIANT_ENCODERS = {"ngram": None, "minilm": "all-minilm-l6-v2", "policy": "tiny-random-smollm2"}


@pytest.mark.parametrize("variant", sorted(VARIANT_ENCODERS))
def test_each_variant_separates_a_separable_set(variant):
    settings = DiscriminatorSettings(variant=variant, encoder=VARIANT_ENCODERS[variant])
    fit = FitSettings(epochs=40, patience=40, learning_rate=1e-2, seed=0)
    train, heldout = split_by_prompt(styled_rows(60), 0.25, seed=0)
    model = build_discriminator(settings, settings.encoder)
    _, report, _ = fit_discriminator(model, train, heldout, fit, progress=False)
    assert report["auc"] > 0.9, report["history"][-3:]
    assert report["heldout"]["prompts"] == 15 and report["train"]["prompts"] == 45


def test_the_fit_seed_sets_the_initialization():
    """The same seed gives the same discriminator, whatever used the global RNG before the model was built."""
    settings = DiscriminatorSettings(variant="minilm", encoder=VARIANT_ENCODERS["minilm"])
    fit = FitSettings(epochs=2, patience=2, seed=3)
    train, heldout = split_by_prompt(styled_rows(20), 0.25, seed=0)
    heads = []
    for draws in (1, 2):
        torch.rand(draws)
        model, _, _ = fit_discriminator(build_discriminator(settings, settings.encoder), train, heldout, fit, progress=False)
        heads.append(model.head.state_dict())
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_a_discriminator_fails_on_shuffled_labels():
    rows = styled_rows(150, seed=1)
    labels = [r.label for r in rows]
    random.Random(2).shuffle(labels)
    shuffled = [LabelledResponse(r.key, r.prompt, r.response, label) for r, label in zip(rows, labels)]
    train, heldout = split_by_prompt(shuffled, 0.25, seed=0)
    model = build_discriminator(DiscriminatorSettings(variant="ngram"), None)
    _, report, _ = fit_discriminator(model, train, heldout, FitSettings(epochs=40, patience=40, learning_rate=1e-2), progress=False)
    assert report["auc"] < 0.7, report["auc"]


def test_sentence_granularity_scores_the_mean_of_the_sentences():
    model = build_discriminator(DiscriminatorSettings(variant="ngram", granularity="sentence"), None)
    with torch.no_grad():
        model.head.weight.normal_()
    whole = model.score(["p"], ["First one here. Second one there.\n- a third line"])
    parts = model.score(["p"] * 3, ["First one here.", "Second one there.", "- a third line"])
    assert whole.item() == pytest.approx(parts.mean().item(), abs=1e-6)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    from conftest import TOY_ROWS

    return write_jsonl(tmp_path_factory.mktemp("aapa") / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])


def sampling_args(tiny_model: str, data: Path) -> list[str]:
    return ["--set", f"model.name={tiny_model}", "--set", "model.dtype=fp32", "--set", f"data.prompts={data}",
            "--set", "rollout.max_new_tokens=8", "--no-progress", "--heldout-fraction", "0.25", "--epochs", "5"]


@pytest.fixture(scope="module")
def ngram_folder(tiny_model, toy_data, tmp_path_factory) -> Path:
    """A discriminator trained by the command, its negatives sampled from the tiny model."""
    out = tmp_path_factory.mktemp("disc") / "ngram"
    assert main(["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "ngram", "--out", str(out)]) == 0
    return out


def test_the_command_writes_a_folder_that_training_loads(ngram_folder, capsys):
    verify_manifest(ngram_folder)
    for name in ("discriminator.json", HEAD_FILE, "report.json", "scores_hist.png", "heldout.jsonl", "negatives.jsonl"):
        assert (ngram_folder / name).is_file(), name
    report = json.loads((ngram_folder / "report.json").read_text())
    assert set(report) >= {"auc", "accuracy", "acc_expert", "acc_policy", "best_epoch", "history", "seconds"}
    negatives = [json.loads(line) for line in (ngram_folder / "negatives.jsonl").read_text().splitlines()]
    assert len(negatives) == 8 and all(row["completion"][0]["content"] for row in negatives)
    model = load_discriminator(ngram_folder)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_sampling_the_negatives_resumes(tiny_model, toy_data, tmp_path):
    """A killed command resumes from the responses it has: the finished folder holds the same negatives."""
    args = ["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "ngram", "--set", "rollout.batch_size=3"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    partial = tmp_path / "resumed"
    partial.mkdir()
    lines = (tmp_path / "straight" / "negatives.jsonl").read_text().splitlines(keepends=True)
    (partial / "negatives.jsonl").write_text("".join(lines[:3]) + lines[3][:20])  # a batch written, the next cut
    assert main([*args, "--out", str(partial)]) == 0
    assert (partial / "negatives.jsonl").read_text() == (tmp_path / "straight" / "negatives.jsonl").read_text()


# ---- the anchoring term in training -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sft_aapa", "grpo_aapa", "chord_aapa", "staged_aapa"])
def test_every_aapa_algorithm_logs_the_anchoring_score_and_the_drift_check(algorithm, ngram_folder, tiny_overrides):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.name={algorithm}", f"algorithm.anchor.path={ngram_folder}"])
    trainer = UniAPLTrainer(args=config)
    trainer.train()
    rows = read_metrics(Path(config.training.output_dir))
    drift = {row["anchor/heldout_expert_score"] for row in rows}
    assert len(drift) == 1, drift  # frozen: the same held-out score every step
    for row in rows:
        assert {"anchor/score_mean", "anchor/reward_mean", "anchor/weight"} <= set(row)
    # the frozen discriminator: no gradients, its weights byte-identical to its folder's
    saved = load_file(str(ngram_folder / HEAD_FILE))
    current = trainer.anchor.model.head.state_dict()
    assert all(torch.equal(saved[k], current[k].cpu()) for k in saved)
    assert not any(p.requires_grad or p.grad is not None for p in trainer.anchor.model.parameters())
    verify_manifest(ngram_folder)


def test_sft_aapa_runs_without_a_reward_function(ngram_folder, tiny_overrides):
    overrides = [o for o in tiny_overrides if not o.startswith("rewards=")]
    config = UniAPLConfig.from_yaml(None, overrides + ["algorithm.name=sft_aapa", f"algorithm.anchor.path={ngram_folder}"])
    UniAPLTrainer(args=config).train()
    row = read_metrics(Path(config.training.output_dir))[-1]
    assert "reward/mean" not in row and "anchor/reward_mean" in row and "loss/rl" in row
    with pytest.raises(ConfigError, match="rewards: algorithm 'grpo_aapa' runs RL on the task reward"):
        UniAPLTrainer(args=UniAPLConfig.from_yaml(None, overrides + ["algorithm.name=grpo_aapa", f"algorithm.anchor.path={ngram_folder}"]))


def test_staged_aapa_starts_its_second_stage_from_the_first_stages_weights(ngram_folder, tiny_overrides, monkeypatch):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=staged_aapa", f"algorithm.anchor.path={ngram_folder}",
                                                            "training.learning_rate=1e-2", "training.max_steps=3",
                                                            "algorithm.sft_stage_steps=1"])
    trainer = UniAPLTrainer(args=config)
    seen = []
    build_optimizer = trainer.models.build_optimizer

    def record_start(stage_steps):  # the policy as each stage begins
        seen.append({k: v.detach().clone() for k, v in trainer.models.unwrapped().state_dict().items()})
        build_optimizer(stage_steps)

    monkeypatch.setattr(trainer.models, "build_optimizer", record_start)
    trainer.train()
    stage_one = load_file(str(Path(config.training.output_dir) / "stages" / "sft_aapa" / "model.safetensors"))
    assert len(seen) == 2
    assert any(not torch.equal(seen[0][k], stage_one[k]) for k in stage_one)  # stage 1 trained
    for key in stage_one:
        assert torch.equal(seen[1][key], stage_one[key]), key


@pytest.mark.parametrize("interrupt_at_call", [1, 3], ids=["in-stage-1", "in-stage-2"])
def test_staged_aapa_resumes_exactly_from_either_stage(interrupt_at_call, ngram_folder, tiny_overrides, tmp_path):
    common = tiny_overrides + ["algorithm.name=staged_aapa", f"algorithm.anchor.path={ngram_folder}", "training.max_steps=4",
                               "algorithm.sft_stage_steps=2", "training.save_steps=1", "training.learning_rate=1e-2"]
    straight = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / 'straight'}"])
    UniAPLTrainer(args=straight).train()
    resumed = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / 'resumed'}"])
    with pytest.raises(KeyboardInterrupt):  # every step scores its rollouts once
        UniAPLTrainer(args=resumed, reward_funcs=[StopAfter(calls=interrupt_at_call)]).train()
    UniAPLTrainer(args=resumed).train(resume=True)
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert read_metrics(tmp_path / "straight") == [
        {**row, **{k: v for k, v in straight_row.items() if k.startswith("time/") or k == "perf/tokens_per_s"}}
        for row, straight_row in zip(read_metrics(tmp_path / "resumed"), read_metrics(tmp_path / "straight"))]


def test_resuming_with_another_discriminator_names_both(ngram_folder, tiny_model, toy_data, tiny_overrides, tmp_path):
    other = tmp_path / "other"
    assert main(["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "ngram", "--seed", "5",
                 "--out", str(other)]) == 0
    common = tiny_overrides + ["algorithm.name=grpo_aapa", "training.max_steps=2", "training.save_steps=1"]
    config = UniAPLConfig.from_yaml(None, common + [f"algorithm.anchor.path={ngram_folder}"])
    with pytest.raises(KeyboardInterrupt):
        UniAPLTrainer(args=config, reward_funcs=[StopAfter(calls=1)]).train()
    moved = tmp_path / "moved"
    shutil.copytree(ngram_folder, moved)  # the same discriminator elsewhere resumes
    swapped = UniAPLConfig.from_yaml(None, common + [f"algorithm.anchor.path={other}"])
    with pytest.raises(ConfigError, match=f"'{ngram_folder}'.*'{other}'"):
        UniAPLTrainer(args=swapped).train(resume=True)
    UniAPLTrainer(args=UniAPLConfig.from_yaml(None, common + [f"algorithm.anchor.path={moved}"])).train(resume=True)


# ---- bad input: one clear error naming the file or field --------------------------------------------


def test_a_missing_truncated_or_other_variant_folder_is_refused(ngram_folder, tmp_path):
    with pytest.raises(UniaplError, match=f"algorithm.anchor.path: the discriminator folder '{tmp_path / 'none'}' does not exist"):
        load_discriminator(tmp_path / "none")
    with pytest.raises(UniaplError, match="is not a discriminator folder"):
        load_discriminator(tmp_path)
    truncated = tmp_path / "truncated"
    shutil.copytree(ngram_folder, truncated)
    head = truncated / HEAD_FILE
    head.write_bytes(head.read_bytes()[:100])
    with pytest.raises(IntegrityError, match=f"{head}: 100 bytes"):
        load_discriminator(truncated)
    with pytest.raises(ConfigError, match=f"algorithm.anchor.variant is 'minilm', but {ngram_folder} holds a 'ngram'"):
        load_discriminator(ngram_folder, variant="minilm")


def test_a_config_without_a_folder_is_refused(tiny_overrides):
    with pytest.raises(ConfigError, match="algorithm.anchor.path: algorithm 'grpo_aapa' adds AAPA's anchoring reward"):
        UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=grpo_aapa"])


def test_a_discriminator_trained_on_another_encoder_or_tokenizer_is_refused(tiny_model, toy_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "policy"
    assert main(["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "policy", "--out", str(folder)]) == 0
    other_weights, other_tokenizer = tmp_path / "other-weights", tmp_path / "other-tokenizer"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(other_weights)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(other_weights)
    shutil.copytree(tiny_model, other_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(["<a-new-token>"])
    tokenizer.save_pretrained(other_tokenizer)
    assert weights_sha256(load_discriminator(folder, start_policy=tiny_model).encoder) == json.loads(
        (folder / "discriminator.json").read_text())["encoder"]["weights_sha256"]
    with pytest.raises(ConfigError, match=f"trained with the encoder '{tiny_model}', but the encoder this run asks for is "
                                          f"'{other_weights}', which has other weights"):
        load_discriminator(folder, start_policy=str(other_weights))
    with pytest.raises(ConfigError, match=f"algorithm.anchor.encoder is '{other_tokenizer}', which has another tokenizer"):
        load_discriminator(folder, encoder=str(other_tokenizer))


def test_data_without_demonstrations_or_negatives_is_one_clear_error(tiny_model, toy_data, tmp_path, capsys):
    prompts_only = write_jsonl(tmp_path / "prompts.jsonl", [chat_row("Say hi.")])
    args = ["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "ngram"]
    assert main([*args, "--data", str(prompts_only), "--out", str(tmp_path / "a")]) == 2
    assert f"{prompts_only}: no row has a demonstration" in capsys.readouterr().err
    unrelated = write_jsonl(tmp_path / "negatives.jsonl", [chat_row("Another prompt.", "Another answer.")])
    assert main([*args, "--negatives", str(unrelated), "--out", str(tmp_path / "b")]) == 2
    assert f"{unrelated}: no policy response to any prompt of {toy_data}" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main([*args, "--negatives", str(empty), "--out", str(tmp_path / "c")]) == 2
    assert f"data file '{empty}' has no rows" in capsys.readouterr().err
    assert not (tmp_path / "c" / "discriminator.json").exists()


def test_a_trained_discriminator_is_not_overwritten(ngram_folder, tiny_model, toy_data, capsys):
    before = (ngram_folder / "manifest.json").read_text()
    assert main(["discriminator", "train", *sampling_args(tiny_model, toy_data), "--variant", "ngram", "--out", str(ngram_folder)]) == 2
    assert "already holds a trained discriminator" in capsys.readouterr().err
    assert (ngram_folder / "manifest.json").read_text() == before


def test_presets_name_the_aapa_algorithms():
    assert all(PRESETS[name].use_anchor for name in ("sft_aapa", "grpo_aapa", "chord_aapa"))
    assert not PRESETS["sft_aapa"].use_task_reward
    with pytest.raises(DataError):
        split_by_prompt(styled_rows(1), 0.5, seed=0)  # one prompt cannot give both splits


# ---- the discriminator-variants analysis --------------------------------------------------------------


def test_analyze_scores_expert_start_and_policy_responses_with_each_discriminator(ngram_folder, tiny_model, toy_data, tmp_path,
                                                                                   capsys):
    from uniapl.analysis.report import write_report

    out = tmp_path / "analysis"
    assert main(["analyze", "--model", tiny_model, "--expert", str(toy_data), "--out", str(out), "--max-new-tokens", "8",
                 "--discriminator", str(ngram_folder)]) == 0
    assert "discriminator ngram (ngram): held-out AUC" in capsys.readouterr().out
    scored = json.loads((out / "discriminators.json").read_text())["ngram"]
    model = load_discriminator(ngram_folder)
    responses = [json.loads(line)["response"] for line in (out / "responses.jsonl").read_text().splitlines()]
    from conftest import TOY_ROWS

    policy = model.score([p for p, _ in TOY_ROWS], responses).tolist()
    assert scored["scores"]["policy"]["mean"] == pytest.approx(sum(policy) / len(policy), abs=1e-6)
    assert scored["scores"]["expert"]["n"] == len(TOY_ROWS)
    heldout = [json.loads(line) for line in (ngram_folder / "heldout.jsonl").read_text().splitlines()]
    assert scored["scores"]["start_policy"]["n"] == sum(row["label"] == 0 for row in heldout)
    assert scored["heldout_auc"] == json.loads((ngram_folder / "report.json").read_text())["auc"]
    assert (out / "discriminator_ngram_hist.png").stat().st_size > 1000

    model_folder = tmp_path / "model"  # a plain model folder whose results lie beside its weights counts as a run
    shutil.copytree(tiny_model, model_folder)
    shutil.copytree(out, model_folder / "analysis")
    write_report([model_folder], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Discriminator variants" in report and "| model | ngram | ngram, response |" in report


def test_compare_scores_every_runs_analysis_with_the_discriminators(ngram_folder, toy_data, tiny_overrides, tmp_path, capsys,
                                                                     monkeypatch):
    """compare --discriminator: each run's analysis samples scored, AAPA run or not; once; from published results
    without weights too; and a folder that is no discriminator, or one without the analysis it scores, fails before
    any training."""
    from uniapl.compare import CompareSettings, compare

    config = tmp_path / "base.yaml"
    config.write_text("model: {name: tiny-random-smollm2}\n")
    settings = CompareSettings(("grpo",), (1,), overrides=tuple(tiny_overrides), expert=str(toy_data), eval_max_new_tokens=8,
                               dtype="fp32", skip=("ifeval",), discriminators=(str(ngram_folder),))
    compare(config, tmp_path / "grid", settings)
    analysis = tmp_path / "grid" / "grpo-seed1" / "final" / "analysis"
    scored = json.loads((analysis / "discriminators.json").read_text())
    responses = [json.loads(line)["response"] for line in (analysis / "responses.jsonl").read_text().splitlines()]
    from conftest import TOY_ROWS

    policy = load_discriminator(ngram_folder).score([p for p, _ in TOY_ROWS], responses).tolist()
    assert scored["ngram"]["folder"] == str(ngram_folder)
    assert scored["ngram"]["scores"]["policy"]["mean"] == pytest.approx(sum(policy) / len(policy), abs=1e-6)
    assert "## Discriminator variants" in (tmp_path / "grid" / "report" / "report.md").read_text()
    capsys.readouterr()
    compare(config, tmp_path / "grid", settings)
    assert "grpo-seed1: discriminators: already done, skipped" in capsys.readouterr().out
    # restored from its published results: no final model, but the samples, which is all the scores need
    (analysis.parent / "config.json").unlink()
    (analysis / "discriminators.json").unlink()
    monkeypatch.setattr("uniapl.compare.train_run", lambda config: pytest.fail("trained again to score the samples"))
    compare(config, tmp_path / "grid", settings)
    assert json.loads((analysis / "discriminators.json").read_text()) == scored
    (analysis / "responses.jsonl").unlink()
    (analysis / "discriminators.json").unlink()
    with pytest.raises(UniaplError, match=r"the analysis's samples \(responses.jsonl\) are missing"):
        compare(config, tmp_path / "grid", settings)

    with pytest.raises(UniaplError, match="--discriminator: .* is not a discriminator folder"):
        compare(config, tmp_path / "other", replace(settings, discriminators=(str(tmp_path),)))
    with pytest.raises(UniaplError, match="it cannot run with --skip analyze"):
        compare(config, tmp_path / "other", replace(settings, skip=("ifeval", "analyze")))
    assert not (tmp_path / "other").exists()


def test_the_step_benchmark_prices_the_anchoring_reward(ngram_folder, tiny_model, tmp_path):
    """benchmarks/step_throughput.py runs ours-grpo-aapa beside ours-grpo (the figures come from real runs)."""
    import os
    import subprocess
    import sys

    from markdown_tables import markdown_tables

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "step_throughput.py"
    command = [sys.executable, str(script), "--systems", "ours-grpo,ours-grpo-aapa", "--anchor", str(ngram_folder), "--model", tiny_model,
               "--steps", "1", "--max-new-tokens", "4", "--prompts", "2", "--generations", "2"]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ((_, rows),) = markdown_tables(result.stdout)
    assert list(rows) == ["ours-grpo", "ours-grpo-aapa"]
