"""The trainer end to end on the tiny model: every algorithm, learning signals, resume, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import chat_row, write_jsonl
from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.algorithms.presets import PRESETS, STAGED
from uniapl.cli import main
from uniapl.errors import ConfigError, UniaplError

ALGORITHMS = sorted(set(PRESETS) | set(STAGED))
# the *_aapa algorithms need a discriminator trained offline: tests/test_aapa.py runs each of them
WITHOUT_DISCRIMINATOR_FOLDER = [a for a in ALGORITHMS if not UniAPLConfig.from_dict(
    {"algorithm": {"name": a, "anchor": {"path": "any"}}}).uses_anchor()]
# the adversarial reward from the first step, without the default warm-up and ramp, so that short runs exercise it
ADVERSARIAL_FROM_STEP_0 = ["algorithm.discriminator.warmup_steps=0", "algorithm.alpha_adv_warmup_steps=0"]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", WITHOUT_DISCRIMINATOR_FOLDER)
def test_every_algorithm_runs_two_steps_through_the_cli(algorithm, tiny_overrides, tmp_path):
    args = ["train"] + [x for o in tiny_overrides for x in ("--set", o)] + ["--set", f"algorithm.name={algorithm}"]
    assert main(args) == 0
    run = tmp_path / "run"
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    components = UniAPLConfig.from_yaml(run / "config.yaml").components(STAGED.get(algorithm, (algorithm,))[-1])
    last = rows[-1]
    assert ("reward/mean" in last) == components.use_rl
    assert ("disc/acc_policy" in last) == components.use_adversarial
    assert ("lambda" in last) == components.use_sft
    # the final folder loads with plain transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run / "final")
    AutoTokenizer.from_pretrained(run / "final")


def test_metrics_and_tensorboard_are_written(tiny_overrides, tmp_path):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["training.tensorboard=true"])
    UniAPLTrainer(args=config).train()
    run = tmp_path / "run"
    row = read_metrics(run)[0]
    for key in ["reward/mean", "reward/std", "reward/no_commas", "adv/r_adv_mean", "disc/acc_expert", "disc/acc_policy",
                "lambda", "c_batch", "epsilon", "clip/low_frac", "clip/high_frac", "length/mean", "length/min",
                "length/max", "entropy", "perf/tokens_per_s", "time/generation", "time/scoring", "time/training"]:
        assert key in row, key
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def heldout_nll(model_path: str, rows) -> float:
    from uniapl.generation import encode_prompts
    from uniapl.models import load_model_and_tokenizer
    from uniapl.train.sequences import completion_logprobs

    model, tok = load_model_and_tokenizer(model_path, "fp32")
    prompts = encode_prompts(tok, [[{"role": "user", "content": p}] for p, _ in rows])
    completions = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, c in rows]
    logps = completion_logprobs(model, prompts, completions, tok.pad_token_id)
    return -sum(sum(x) for x in logps) / sum(len(x) for x in logps)


def test_sft_lowers_heldout_nll(tiny_overrides, tiny_model, tmp_path):
    heldout = [("Write a line about birds.", "Birds sing in the early morning light."),
               ("Describe a tree briefly.", "The old tree stands tall in the quiet park.")]
    before = heldout_nll(tiny_model, heldout)
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft", "training.max_steps=12",
                                                            "training.learning_rate=3e-3", "training.demos_per_step=4"])
    final = UniAPLTrainer(args=config).train()
    after = heldout_nll(str(final), heldout)
    assert after < before - 1.0, (before, after)


def low_token_reward(prompts, completions, completion_ids, **kwargs):
    """A learnable task for a random model: the share of completion tokens from the lower half of the vocabulary."""
    return [sum(t < 24576 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def peaked_tiny_model(tiny_model: str, folder: Path) -> str:
    """The tiny model with a 10x output layer: near-uniform logits over 49k tokens give GRPO nothing to
    reinforce, while a peaked distribution makes the same tokens recur, so their rewards can be learned."""
    from uniapl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model, "fp32")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_grpo_raises_mean_reward(tiny_overrides, tiny_model, tmp_path):
    model = peaked_tiny_model(tiny_model, tmp_path / "peaked")
    config = UniAPLConfig.from_yaml(None, tiny_overrides + [
        f"model.name={model}", "algorithm.name=grpo", "training.max_steps=12", "training.learning_rate=3e-2",
        "rollout.num_generations=8", "training.prompts_per_step=4",
    ])
    run = UniAPLTrainer(args=config, reward_funcs=[low_token_reward]).train().parent
    rewards = [r["reward/mean"] for r in read_metrics(run)]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > 0.9 and last > first + 0.2, rewards


@pytest.mark.parametrize("epsilon, direction", [(0.0, "up"), (100.0, "down")])
def test_lambda_follows_the_constraint(epsilon, direction, tiny_overrides):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + [
        "algorithm.name=uniapl_no_adv", "training.max_steps=4", f"algorithm.epsilon={epsilon}",
        "algorithm.lambda_init=1.0", "algorithm.eta_lambda=0.05",
    ])
    run = UniAPLTrainer(args=config).train().parent
    rows = read_metrics(run)
    lambdas = [r["lambda"] for r in rows]
    for row in rows:
        assert (row["c_batch"] > epsilon) == (direction == "up")
    if direction == "up":  # C ~ 10.8 nats on a random model: lambda gains eta * (C - 0) each step
        assert all(b > a for a, b in zip(lambdas, lambdas[1:])), lambdas
    else:  # C - 100 < 0: one step of 0.05 * (C - 100) takes lambda from 1 to the floor 0
        assert lambdas[0] == 1.0 and all(x == 0.0 for x in lambdas[1:]), lambdas


def test_discriminator_separates_expert_from_policy(tiny_overrides):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + [
        "algorithm.name=uniapl", "training.max_steps=10", "algorithm.discriminator.learning_rate=3e-3",
        "algorithm.discriminator.steps_per_update=3",
    ])
    run = UniAPLTrainer(args=config).train().parent
    last = read_metrics(run)[-1]
    assert (last["disc/acc_expert"] + last["disc/acc_policy"]) / 2 > 0.8, last
    # policy responses look unlike the expert's: clipped r_adv is negative and within [-c, c]
    assert -config.algorithm.adv_clip <= last["adv/r_adv_mean"] < 0


class StopAfter:
    """A reward (no_commas unless given) that interrupts the run at a given call, like a kill in the middle of a step."""

    def __init__(self, calls: int, reward=None):
        from uniapl.rewards.builtin import no_commas

        self.calls = calls
        self.reward = reward or no_commas
        self.__name__ = self.reward.__name__

    def __call__(self, prompts, completions, **kwargs):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return self.reward(prompts, completions, **kwargs)


def final_state(run: Path) -> dict:
    return load_file(str(run / "final" / "model.safetensors"))


def test_resume_reaches_the_same_parameters(tiny_overrides, tmp_path):
    common = tiny_overrides + ADVERSARIAL_FROM_STEP_0 + ["algorithm.name=uniapl", "training.max_steps=4", "training.save_steps=2",
                                                         "training.learning_rate=1e-3", "algorithm.discriminator.learning_rate=1e-2"]
    straight = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / 'straight'}"])
    UniAPLTrainer(args=straight).train()

    resumed = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / 'resumed'}"])
    with pytest.raises(KeyboardInterrupt):
        UniAPLTrainer(args=resumed, reward_funcs=[StopAfter(calls=3)]).train()
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step-000002"
    assert not (tmp_path / "resumed" / "final").exists()
    UniAPLTrainer(args=resumed).train(resume=True)

    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed")]
    assert steps == [1, 2, 3, 4]
    lam_a = read_metrics(tmp_path / "straight")[-1]["lambda"]
    lam_b = read_metrics(tmp_path / "resumed")[-1]["lambda"]
    assert math.isclose(lam_a, lam_b, rel_tol=1e-9)


def test_checkpoint_has_no_pickle_and_survives_a_crashed_save(tiny_overrides, tmp_path, monkeypatch):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["training.save_steps=1", "training.max_steps=1"])
    trainer = UniAPLTrainer(args=config)
    trainer.train()
    checkpoints = tmp_path / "run" / "checkpoints"
    folder = checkpoints / "step-000001"
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jinja", ".txt", ".yaml"}, suffixes

    import uniapl.train.checkpoint as ckpt

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    trainer.state.global_step = 2
    with pytest.raises(UniaplError, match="could not write '.*step-000002': disk full; what was saved there before is unchanged"):
        trainer.save_checkpoint()
    assert (checkpoints / "latest").read_text() == "step-000001"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-000001"]


@pytest.mark.parametrize("settings, memory_saver", [
    # head discriminator: its pooling pass; two temperatures
    (["algorithm.name=uniapl", "rollout.temperature=0.7"], "training.micro_batch_size=3"),
    # reference model, LUFFY's shaping
    (["algorithm.name=luffy", "algorithm.beta_kl=0.1", "algorithm.loss_aggregation=seq_mean_token_mean"], "training.micro_batch_size=3"),
    # demonstration-only micro-batches, with no loss term
    (["algorithm.name=grpo", "algorithm.use_adversarial=true"], "training.micro_batch_size=1"),
    (["algorithm.name=uniapl"], "model.gradient_checkpointing=true"),
    # each prompt forwarded once per pass (the default) or once per row: a group, LUFFY's member, the reference model
    (["algorithm.name=luffy", "algorithm.beta_kl=0.1"], "training.share_prompt_prefix=false"),
    (["algorithm.name=uniapl", "training.micro_batch_size=3"], "training.share_prompt_prefix=false"),
    # LoRA without dropout: a prompt forwarded once per group draws one dropout mask where per-row passes draw several
    (["algorithm.name=uniapl", "model.lora.enabled=true", "model.lora.target_modules=[q_proj,v_proj]", "model.lora.dropout=0.0"],
     "model.gradient_checkpointing=true"),
])
def test_memory_savers_give_the_same_update(settings, memory_saver, tiny_model, tiny_overrides, tmp_path):
    """Micro-batches (rows split over several passes), activation checkpointing and shared prompt passes change memory
    and time, not the update."""
    # Adam's eps at 1e-6: with 1e-8 an element whose gradient is ~1e-8 moves by about +-lr on float noise alone
    common = tiny_overrides + ADVERSARIAL_FROM_STEP_0 + settings + ["training.learning_rate=1e-3", "algorithm.discriminator.learning_rate=1e-2",
                                                                    "training.adam_epsilon=1e-6"]
    runs = {}
    for name, extra in [("whole", []), ("micro", [memory_saver])]:
        config = UniAPLConfig.from_yaml(None, common + extra + [f"training.output_dir={tmp_path / name}"])
        UniAPLTrainer(args=config, reward_funcs=[low_token_reward]).train()
        runs[name] = tmp_path / name
    a, b = final_state(runs["whole"]), final_state(runs["micro"])
    start = load_file(str(Path(tiny_model) / "model.safetensors"))
    assert any(not torch.equal(a[k], start[k]) for k in a if k in start), "training did not move the parameters"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    whole, micro = read_metrics(runs["whole"])[-1], read_metrics(runs["micro"])[-1]
    assert whole.keys() == micro.keys()
    for key in ["loss/rl", "loss/sft", "c_batch", "lambda", "entropy", "clip/high_frac", "kl", "disc/acc_policy", "reward/mean"]:
        if key in whole:
            assert math.isclose(whole[key], micro[key], rel_tol=1e-4, abs_tol=1e-6), key


def test_long_demonstrations_take_passes_of_their_own():
    """A demonstration longer than the rollouts would pad every rollout of a shared pass to its length."""
    from uniapl.train.batch import DEMO, ROLLOUT, TrainRow, plan_passes

    rollouts = [TrainRow([1, 2, 3], [7] * 8, ROLLOUT) for _ in range(4)] + [TrainRow([4, 5], [7] * 8, ROLLOUT) for _ in range(4)]
    long_demos = [TrainRow([1, 2, 3], [8] * 300, DEMO), TrainRow([6], [8] * 250, DEMO)]
    assert plan_passes(rollouts + long_demos, 10, True) == [[8, 9], list(range(8))]  # demonstrations first
    assert plan_passes(rollouts + long_demos, 4, True) == [[8, 9], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan_passes(rollouts + long_demos, 10, False) == [[0, 1, 2, 3, 8, 4, 5, 6, 7, 9]]  # one prompt's rows together
    short_demos = [TrainRow([1, 2, 3], [8] * 6, DEMO), TrainRow([4, 5], [8] * 5, DEMO)]
    assert plan_passes(rollouts + short_demos, 10, True) == [[0, 1, 2, 3, 8, 4, 5, 6, 7, 9]]  # a second pass would cost more


def test_demonstrations_and_rollouts_of_very_different_lengths_go_into_length_buckets():
    """Eight demonstrations of 10 to 330 tokens in one pass would pad every one to 330: short and long ones take passes
    of their own, each rollout group stays in one pass, and the head discriminator's RL rows stay together."""
    from uniapl.train.batch import DEMO, ROLLOUT, TrainRow, plan_passes
    from uniapl.train.sequences import passes_cost

    lengths = [300, 12, 320, 10, 15, 330, 20, 310]
    demos = [TrainRow([10 + i], [8] * n, DEMO) for i, n in enumerate(lengths)]
    rollouts = [TrainRow([1, 2], [7] * 16, ROLLOUT) for _ in range(4)] + [TrainRow([3, 4], [7] * 120, ROLLOUT) for _ in range(4)]
    rows = rollouts + demos
    plan = plan_passes(rows, len(rows), True)
    assert plan == [[11, 9, 12, 14], [8, 15, 10, 13], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert passes_cost(rows, plan) < passes_cost(rows, [list(range(8, 16)), list(range(8))]) < passes_cost(rows, [list(range(16))])
    assert plan_passes(rows, len(rows), True, keep_rl_together=True)[-1] == list(range(8))
    assert all(len(p) <= 3 for p in plan_passes(rows, 3, True))


def test_length_buckets_give_the_same_update_as_one_padded_pass(tiny_overrides, tmp_path, monkeypatch):
    """uniapl_no_adv on demonstrations of 3 to 120 tokens: the bucketed passes and one padded pass end at the same weights."""
    import uniapl.train.batch as batch_module

    lengths = [3, 120, 5, 90, 8, 110, 4, 100]
    rows = [chat_row(f"Write {n} words about the sea, number {i}.", " ".join(["calm water"] * (n // 2)) + ".") for i, n in enumerate(lengths)]
    data = write_jsonl(tmp_path / "uneven.jsonl", rows)
    common = tiny_overrides + [f"data.prompts={data}", "algorithm.name=uniapl_no_adv", "training.demos_per_step=8",
                               "training.learning_rate=1e-3", "training.adam_epsilon=1e-6"]
    plan, passes = batch_module.plan_passes, {}
    for name in ("bucketed", "padded"):
        def planned(rows, size, by_length, keep_rl_together, name=name):
            passes.setdefault(name, []).append(plan(rows, size, by_length, keep_rl_together) if name == "bucketed" else [list(range(len(rows)))])
            return passes[name][-1]

        monkeypatch.setattr(batch_module, "plan_passes", planned)
        config = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / name}"])
        UniAPLTrainer(args=config, reward_funcs=[low_token_reward]).train()
    assert all(len(p) >= 3 for p in passes["bucketed"]), passes["bucketed"]
    a, b = final_state(tmp_path / "bucketed"), final_state(tmp_path / "padded")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    for key in ["loss/rl", "loss/sft", "c_batch", "lambda", "entropy"]:
        first, second = read_metrics(tmp_path / "bucketed")[-1][key], read_metrics(tmp_path / "padded")[-1][key]
        assert math.isclose(first, second, rel_tol=1e-4, abs_tol=1e-6), key


def test_demonstration_passes_give_the_same_update_without_an_extra_pooling_pass(tiny_overrides, tmp_path, monkeypatch):
    """uniapl with the head discriminator, its demonstrations in a pass of their own or with the rollouts: the same
    update, and neither forwards a row twice (the advantages wait for the pass with the rollouts). With the rollouts
    in several micro-batches, only they take the no-grad pooling pass."""
    import uniapl.train.batch as batch_module
    import uniapl.train.policy as policy_module
    import uniapl.train.sequences as sequences_module

    plan, score = batch_module.plan_passes, policy_module.score_tokens
    monkeypatch.setattr(sequences_module, "PASS_OVERHEAD_TOKENS", 0)  # these tiny rows gain from a second pass only without it
    common = tiny_overrides + ADVERSARIAL_FROM_STEP_0 + ["algorithm.name=uniapl", "rollout.max_new_tokens=2", "training.learning_rate=1e-3",
                                                         "algorithm.discriminator.learning_rate=1e-2", "training.adam_epsilon=1e-6"]
    runs, passes, forwards = {}, {}, {}
    for name, split, extra in [("joint", False, []), ("split", True, []), ("micro", True, ["training.micro_batch_size=2"])]:
        passes[name], forwards[name] = [], []
        def planned(rows, size, _, keep_rl_together, split=split, name=name):
            passes[name].append(([r.kind for r in rows], plan(rows, size, split, keep_rl_together)))
            return passes[name][-1][1]

        monkeypatch.setattr(batch_module, "plan_passes", planned)
        monkeypatch.setattr(policy_module, "score_tokens", lambda *a, name=name, **k: forwards[name].append(len(a[1].input_ids)) or score(*a, **k))
        config = UniAPLConfig.from_yaml(None, common + extra + [f"training.output_dir={tmp_path / name}"])
        UniAPLTrainer(args=config, reward_funcs=[low_token_reward]).train()
        runs[name] = tmp_path / name
    assert [len(p) for _, p in passes["joint"]] == [1, 1] and all(len(p) >= 2 for _, p in passes["split"])
    assert sum(forwards["joint"]) == sum(forwards["split"]) == 2 * 6  # 4 rollouts and 2 demonstrations a step, each once
    # in micro-batches, the passes with a rollout go once more, without gradients, for their pooled features;
    # demonstration-only passes do not
    with_rl = [[p for p in plan if any(kinds[j] != batch_module.DEMO for j in p)] for kinds, plan in passes["micro"]]
    assert any(len(rl) < len(plan) for rl, (_, plan) in zip(with_rl, passes["micro"])), "no step put its demonstrations in a pass of their own"
    assert sum(forwards["micro"]) == sum(6 + sum(len(p) for p in rl) for rl in with_rl)
    a = final_state(runs["joint"])
    for name in ["split", "micro"]:
        b = final_state(runs[name])
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=f"{name}: {key}")
        joint, other = read_metrics(runs["joint"])[-1], read_metrics(runs[name])[-1]
        for key in ["loss/rl", "loss/sft", "c_batch", "lambda", "disc/acc_policy", "reward/mean"]:
            # loss/rl is 0 up to rounding here (ratio 1, advantages summing to 0 in each group of equal lengths)
            assert math.isclose(joint[key], other[key], rel_tol=1e-4, abs_tol=1e-5), f"{name}: {key}"


def test_bf16_trains_fp32_master_weights_in_autocast(tiny_overrides, monkeypatch):
    """model.dtype bf16 (what `auto` picks on hardware with bf16, CPUs included): the policy keeps fp32 weights, every
    training pass runs in bf16 autocast (the reference model's too, so the KL before any update is 0), and the
    rollouts come from a bf16 copy."""
    import uniapl.train.policy as policy_module

    in_autocast, score = [], policy_module.score_tokens
    monkeypatch.setattr(policy_module, "score_tokens", lambda *a, **k: in_autocast.append(torch.is_autocast_enabled("cpu")) or score(*a, **k))
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["model.dtype=bf16", "algorithm.name=uniapl", "algorithm.beta_kl=0.1",
                                                            "training.max_steps=1"])
    trainer = UniAPLTrainer(args=config)
    row = read_metrics(trainer.train().parent)[0]
    assert in_autocast and all(in_autocast)
    assert {p.dtype for p in trainer.models.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.models.rollout_model.parameters()} == {torch.bfloat16}
    assert row["kl"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(row["loss/rl"]) and math.isfinite(row["loss/sft"])


def test_compiled_rollouts_train_like_plain_ones(tiny_overrides, tmp_path):
    """rollout.engine compiled (the GPU default) draws the same rollouts as plain, so two steps end at the same weights."""
    finals = []
    for engine in ("plain", "compiled"):
        config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=grpo", "training.learning_rate=1e-3",
                                                                f"rollout.engine={engine}", f"training.output_dir={tmp_path / engine}"])
        finals.append(final_state(UniAPLTrainer(args=config, reward_funcs=[low_token_reward]).train().parent))
    for key in finals[0]:
        torch.testing.assert_close(finals[0][key], finals[1][key], rtol=0, atol=1e-6, msg=key)


def test_the_sft_stage_of_sft_then_grpo_can_take_its_own_demonstrations_per_step(tiny_overrides):
    """The protocol's fair split: a short SFT stage with a larger demonstration batch, then GRPO."""
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft_then_grpo", "algorithm.sft_stage_steps=1",
                                                            "algorithm.sft_stage_demos_per_step=3", "training.max_steps=3"])
    assert [config.demos_per_step(i) for i in (0, 1)] == [3, 2]
    trainer = UniAPLTrainer(args=config)
    trainer.train()
    assert trainer.state.demo_cursor == 3  # one SFT step of 3 demonstrations; GRPO takes none
    with pytest.raises(ConfigError, match="algorithm.sft_stage_demos_per_step: must be > 0"):
        UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.sft_stage_demos_per_step=0"])


def test_the_engines_log_probs_are_checked_against_the_trainers(tiny_overrides):
    """rollout/logp_diff_*: the sampled tokens' log-probs as the engine drew them against the trainer's first pass. The
    plain engine decodes with the policy itself in fp32, so they agree to rounding; with top-k on, nothing is logged."""
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=grpo"])
    UniAPLTrainer(args=config).train()
    row = read_metrics(Path(config.training.output_dir))[-1]
    assert 0 <= row["rollout/logp_diff_mean"] <= row["rollout/logp_diff_max"] < 1e-4
    truncated = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=grpo", "rollout.top_k=5", "training.overwrite_output_dir=true"])
    UniAPLTrainer(args=truncated).train()
    assert "rollout/logp_diff_max" not in read_metrics(Path(config.training.output_dir))[-1]


def test_a_resume_may_not_switch_to_or_from_vllm(tiny_overrides, tmp_path):
    """vLLM's sampling noise is not ours: a run that sampled with one continues with it."""
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=grpo", "training.save_steps=1"])
    with pytest.raises(KeyboardInterrupt):
        UniAPLTrainer(args=config, reward_funcs=[StopAfter(calls=1)]).train()
    state_file = tmp_path / "run" / "checkpoints" / "step-000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["engine"] == "plain"
    state_file.write_text(json.dumps({**state, "engine": "vllm"}))  # as if it had sampled with vLLM
    from uniapl.io import write_manifest

    write_manifest(state_file.parent)
    with pytest.raises(ConfigError, match="sampled its rollouts with the vllm engine and this run would with plain"):
        UniAPLTrainer(args=config).train(resume=True)
