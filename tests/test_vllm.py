"""rollout.engine: vllm (uniapl.generation.vllm_engine). Where vLLM is not installed (the main environment) the
missing-vLLM error and the LoRA merge of the weights it is given run, and the rest is skipped; .ci/run runs this file
again in .venv-vllm (`bash scripts/setup.sh --vllm --test`), where all of it runs."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest
import torch

from test_distributed import COMPARABLE, FSDP2, LEARNABLE_REWARD, assert_same_weights, run_training
from test_trainer import StopAfter, final_state
from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.errors import UniaplError
from uniapl.generation import PlainEngine, SamplingParams, VLLMEngine, resolve_engine_name
from uniapl.generation.vllm_engine import plain_weights

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed here: it runs in .venv-vllm (bash scripts/setup.sh --vllm --test)")

# fp32 vLLM against our fp32 passes: the log-probs of the same tokens differ by float rounding alone (measured up to 7e-6)
FP32_LOGPROB_TOLERANCE = 1e-4
# bf16 vLLM against the trainer's bf16 autocast over fp32 weights, on the random model: mean 0.02, max 0.14 measured
BF16_MEAN_LOGPROB_TOLERANCE = 0.05


@pytest.fixture(scope="session")
def vllm_tiny_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with 32-wide attention heads (vLLM's CPU attention takes no narrower) and weights drawn wide
    enough (std 0.15) that the next token's top two logits stand apart by more than float rounding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-vllm")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.15)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return str(folder)


def load(folder: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), AutoTokenizer.from_pretrained(folder)


def prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(f"Say something about {topic}.")["input_ids"] for topic in ("cats", "dogs", "rain and snow", "the sea")]


def logprob_gap(model, tokenizer, prompt_ids, completions, temperature: float, bf16: bool) -> torch.Tensor:
    """|the completions' log-probs from vLLM - the trainer's (its pass, score_tokens, in bf16 autocast where training
    is bf16)| for every token."""
    from uniapl.train.sequences import completion_logprobs

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        trainer = completion_logprobs(model, prompt_ids, [c.completion_ids for c in completions], tokenizer.pad_token_id, temperature)
    return (torch.tensor([x for c in completions for x in c.logprobs]) - torch.tensor([x for row in trainer for x in row])).abs()


def test_engine_vllm_without_vllm_is_a_clear_error(tiny_overrides, monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as where it is not installed
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["rollout.engine=vllm"])
    with pytest.raises(UniaplError, match=r"rollout.engine: vllm .*not installed.*setup.sh --vllm"):
        UniAPLTrainer(args=config).train()
    assert resolve_engine_name("auto", "cpu", AutoConfig.from_pretrained(config.model.name)) == "plain"


def test_lora_weights_reach_the_engine_merged_as_peft_merges(tiny_overrides):
    """What vLLM is given under LoRA (`PolicyModels.rollout_weights`): every weight of the plain model, the adapters'
    products added in, as PEFT's own merge makes them."""
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["model.lora.enabled=true", "training.learning_rate=1e-2",
                                                            "training.max_steps=1"])
    trainer = UniAPLTrainer(args=config)
    trainer.train()
    policy = trainer.models.unwrapped()
    unmerged = {name.replace(".base_layer", ""): param for name, param in policy.get_base_model().named_parameters() if "lora_" not in name}
    merged = dict(copy.deepcopy(policy).merge_and_unload().named_parameters())
    given = dict(trainer.models.rollout_weights())
    assert given.keys() == merged.keys() == unmerged.keys()
    assert any(not torch.equal(given[name], unmerged[name]) for name in given)  # the trained adapters moved some weights
    for name, tensor in given.items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6, msg=name)


@needs_vllm
def test_auto_picks_vllm_where_it_supports_the_model_and_vllm_names_what_it_does_not(tiny_model, vllm_tiny_model, tiny_overrides):
    from transformers import AutoConfig

    assert resolve_engine_name("auto", "cpu", AutoConfig.from_pretrained(vllm_tiny_model)) == "vllm"
    assert resolve_engine_name("auto", "cpu", AutoConfig.from_pretrained(tiny_model)) == "plain"  # 16-wide heads
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["rollout.engine=vllm"])
    with pytest.raises(UniaplError, match=r"rollout.engine: vllm .*head sizes .* 16"):
        UniAPLTrainer(args=config).train()


@needs_vllm
def test_after_a_weight_update_greedy_decoding_equals_our_engine_and_sampling_scores_as_the_trainer(vllm_tiny_model):
    model, tokenizer = load(vllm_tiny_model)
    engine = VLLMEngine(model, tokenizer)
    with torch.no_grad():  # an update, embedding (tied to the output layer) included
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    engine.load_weights(plain_weights(model))
    ids = prompts(tokenizer)

    greedy = SamplingParams(max_new_tokens=24, do_sample=False)
    ours, theirs = PlainEngine(model, tokenizer).generate(ids, greedy), engine.generate(ids, greedy)
    assert [c.completion_ids for c in theirs] == [c.completion_ids for c in ours]
    assert [c.text for c in theirs] == [c.text for c in ours] and all(c.logprobs == [] for c in theirs)
    stop = lambda row, generated: row == 1 and len(generated) == 3  # noqa: E731
    assert ([(c.completion_ids, c.truncated) for c in engine.generate(ids, greedy, stop=stop)]
            == [(c.completion_ids, c.truncated) for c in PlainEngine(model, tokenizer).generate(ids, greedy, stop=stop)])

    sampling = SamplingParams(max_new_tokens=24, temperature=0.7)
    repeated, seeds = ids * 2, list(range(8))
    first = engine.generate(repeated, sampling, seeds)
    assert [c.completion_ids for c in engine.generate(repeated, sampling, seeds)] == [c.completion_ids for c in first]
    assert len({tuple(c.completion_ids) for c in first}) == len(first)  # each row its own seed
    assert logprob_gap(model, tokenizer, repeated, first, 0.7, bf16=False).max() < FP32_LOGPROB_TOLERANCE


@needs_vllm
def test_on_a_cpu_a_sampled_batch_longer_than_the_prefill_budget_goes_in_groups_and_samples_as_row_by_row(vllm_tiny_model):
    """vLLM on a CPU fails on a seeded row whose prefill spans two scheduler steps ("CPU Generator does not use
    offset"), as `uniapl analyze` did on 64 held-out prompts: such a batch goes in groups that fit the budget."""
    model, tokenizer = load(vllm_tiny_model)
    engine = VLLMEngine(model, tokenizer)
    text = " ".join(["Describe the weather in the mountains and by the sea."] * 30)
    row = tokenizer(text)["input_ids"]
    rows = engine.prefill_budget // len(row) + 3
    # each prompt its own first token: no prefix is shared, so the prefix cache cannot shorten a prefill
    ids, seeds = [tokenizer(f"{i}. {text}")["input_ids"] for i in range(rows)], list(range(rows))
    assert sum(map(len, ids)) > engine.prefill_budget
    groups = engine._request_groups(ids, sampled=True)
    assert len(groups) > 1 and [i for group in groups for i in group] == list(range(rows))
    assert all(sum(len(ids[i]) for i in group) <= engine.prefill_budget for group in groups)
    assert engine._request_groups(ids, sampled=False) == [range(rows)]
    short = [[1, 2, 3]] * (engine.max_rows + 1)  # within the token budget, over the row limit
    assert engine._request_groups(short, sampled=True) == [range(engine.max_rows), range(engine.max_rows, engine.max_rows + 1)]

    sampling = SamplingParams(max_new_tokens=6, temperature=0.7)
    together = engine.generate(ids, sampling, seeds)
    alone = [engine.generate([p], sampling, [seed])[0] for p, seed in zip(ids, seeds)]
    assert [c.completion_ids for c in together] == [c.completion_ids for c in alone]
    with pytest.raises(UniaplError, match="longer than vLLM's prefill budget"):
        engine.generate([row * (engine.prefill_budget // len(row) + 1)], sampling, [0])


@needs_vllm
def test_analyze_samples_through_vllm_when_asked(vllm_tiny_model, tmp_path):
    """`uniapl analyze --engine vllm`: its samples are the vLLM engine's, seeded per row as the analysis seeds them."""
    from uniapl.cli import main
    from uniapl.generation import encode_prompts, sequence_seed
    from uniapl.io import read_jsonl, write_jsonl_atomic

    tasks = ["Write a haiku about rain.", "List three fruits.", "Name a color."]
    expert = tmp_path / "expert.jsonl"
    write_jsonl_atomic(expert, [{"key": f"k{i}", "prompt": [{"role": "user", "content": t}],
                                 "completion": [{"role": "assistant", "content": "Blue, like the sky."}]} for i, t in enumerate(tasks)])
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", vllm_tiny_model, "--expert", str(expert), "--out", str(out), "--max-new-tokens", "12",
                 "--seed", "3", "--engine", "vllm"]) == 0
    assert json.loads((out / "analysis.json").read_text())["settings"]["engine"] == "vllm"

    model, tokenizer = load(vllm_tiny_model)
    prompt_ids = encode_prompts(tokenizer, [[{"role": "user", "content": t}] for t in tasks])
    seeds = [sequence_seed(3, 0, i) for i in range(len(tasks))]
    vllm_samples = VLLMEngine(model, tokenizer).generate(prompt_ids, SamplingParams(max_new_tokens=12), seeds)
    plain_samples = PlainEngine(model, tokenizer).generate(prompt_ids, SamplingParams(max_new_tokens=12), seeds)
    responses = [row["response"] for row in read_jsonl(out / "responses.jsonl")]
    assert responses == [c.text for c in vllm_samples] != [c.text for c in plain_samples]


@needs_vllm
def test_in_bf16_vllm_scores_its_tokens_as_the_trainers_bf16_passes(vllm_tiny_model):
    model, tokenizer = load(vllm_tiny_model)
    engine = VLLMEngine(model, tokenizer, dtype=torch.bfloat16)
    ids = prompts(tokenizer) * 2
    completions = engine.generate(ids, SamplingParams(max_new_tokens=32, temperature=1.0), list(range(len(ids))))
    assert logprob_gap(model, tokenizer, ids, completions, 1.0, bf16=True).mean() < BF16_MEAN_LOGPROB_TOLERANCE


@needs_vllm
def test_training_on_vllm_resumes_exactly_and_updates_as_our_engine_does_given_its_rollouts(vllm_tiny_model, tiny_overrides,
                                                                                           tmp_path, monkeypatch):
    common = tiny_overrides + [f"model.name={vllm_tiny_model}", "training.max_steps=2", "training.save_steps=1",
                               "training.learning_rate=1e-2", "rollout.max_new_tokens=16"]

    rollouts = []  # each step's completions, as vLLM gave them
    generate = VLLMEngine.generate
    monkeypatch.setattr(VLLMEngine, "generate", lambda self, *a, **k: rollouts.append(generate(self, *a, **k)) or rollouts[-1])
    straight = UniAPLConfig.from_yaml(None, common + ["rollout.engine=vllm", f"training.output_dir={tmp_path / 'straight'}"])
    UniAPLTrainer(args=straight).train()
    straight_rollouts = list(rollouts)

    resumed = UniAPLConfig.from_yaml(None, common + ["rollout.engine=vllm", f"training.output_dir={tmp_path / 'resumed'}"])
    with pytest.raises(KeyboardInterrupt):
        UniAPLTrainer(args=resumed, reward_funcs=[StopAfter(calls=1)]).train()  # stopped in step 2, after step 1's checkpoint
    UniAPLTrainer(args=resumed).train(resume=True)
    # a new engine, built on step 1's checkpoint, samples step 2 as the engine that took step 1's update in memory did
    assert rollouts[-1] == straight_rollouts[1]

    replayed = iter(straight_rollouts)
    monkeypatch.setattr(PlainEngine, "generate", lambda self, *a, **k: next(replayed))
    plain = UniAPLConfig.from_yaml(None, common + ["rollout.engine=plain", f"training.output_dir={tmp_path / 'plain'}"])
    UniAPLTrainer(args=plain).train()

    reference = final_state(tmp_path / "straight")
    for run in ("resumed", "plain"):
        state = final_state(tmp_path / run)
        assert state.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-6, msg=f"{run}: {key}")


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp2_on_two_processes_reaches_the_weights_of_one(lora, vllm_tiny_model, tiny_overrides, tmp_path):
    """Each process's engine (vLLM's external launcher) takes the weights gathered from the shards, LoRA merged from the
    whole copy: the second step's rollouts, sampled after a large first update, match one process's."""
    overrides = tiny_overrides + COMPARABLE + LEARNABLE_REWARD + [f"model.name={vllm_tiny_model}", "rollout.engine=vllm"]
    if lora:
        overrides += ["model.lora.enabled=true", "model.lora.dropout=0.0"]
    run_training([sys.executable], overrides, tmp_path / "one")
    run_training(FSDP2, overrides, tmp_path / "fsdp2")
    assert_same_weights(tmp_path / "one", tmp_path / "fsdp2", vllm_tiny_model)
