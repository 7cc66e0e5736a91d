"""The trainer does what the method, its baselines and a TRL user expect (issue 8): each test pins one behaviour
that used to differ, on the tiny model, in a few seconds."""

from __future__ import annotations

import pytest
import torch
from test_trainer import StopAfter, final_state, low_token_reward, read_metrics

from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.errors import ConfigError, DataError, UniaplError, UniaplWarning


def train(overrides: list[str], **trainer_args) -> list[dict]:
    """Run the trainer to the end; the metrics of each step."""
    config = UniAPLConfig.from_yaml(None, overrides)
    return read_metrics(UniAPLTrainer(args=config, **trainer_args).train().parent)


# ---- 1. the lr schedule counts optimizer updates -------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 2])
def test_lr_schedule_is_sized_in_optimizer_updates(iterations, tiny_overrides, monkeypatch):
    seen = []
    adamw_step = torch.optim.AdamW.step

    def record_lr(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record_lr)
    rows = train(tiny_overrides + ["algorithm.name=grpo", "training.lr_scheduler=linear", "training.learning_rate=1e-3",
                                   f"algorithm.num_iterations={iterations}"])
    # 2 steps x `iterations` updates, linear from 1e-3: 1 - u / updates for update u; none at lr 0
    updates = 2 * iterations
    assert seen == pytest.approx([1e-3 * (1 - u / updates) for u in range(updates)])
    # `lr` is the rate of the step's first update: the same per step whatever num_iterations is
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4])


# ---- 2 and 6. the reference model is the policy as its stage started -----------------------------


def perturbed_tiny_model(tiny_model: str):
    """The tiny model with a scaled output layer: unlike the folder it was loaded from (its name_or_path)."""
    from uniapl.models import load_model

    model = load_model(tiny_model, "fp32")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(3.0)
    return model


def test_a_policy_object_is_its_own_reference_and_discriminator_start(tiny_model, tiny_overrides):
    policy = perturbed_tiny_model(tiny_model)
    start = {k: v.clone() for k, v in policy.model.state_dict().items()}
    # the discriminator's learning rate is too small to move a weight: after the run it still holds its start
    config = UniAPLConfig.from_yaml(None, tiny_overrides + [
        "algorithm.name=uniapl", "algorithm.beta_kl=0.1", "algorithm.discriminator.kind=model",
        "algorithm.discriminator.learning_rate=1e-30", "training.max_steps=1"])
    trainer = UniAPLTrainer(model=policy, args=config)  # no processing_class: the tokenizer of policy.name_or_path
    rows = read_metrics(trainer.train().parent)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # before any update the policy is its reference
    body = trainer.discriminator.module.base_model.state_dict()
    for key, value in start.items():
        torch.testing.assert_close(body[key], value, rtol=0, atol=0, msg=key)


def test_a_policy_object_without_a_tokenizer_folder_needs_processing_class(tiny_model, tiny_overrides):
    policy = perturbed_tiny_model(tiny_model)
    policy.name_or_path = "org/some-hub-model"
    with pytest.raises(UniaplError, match="processing_class: the model object's name_or_path"):
        UniAPLTrainer(model=policy, args=UniAPLConfig.from_yaml(None, tiny_overrides))


def test_grpo_after_sft_starts_from_the_sft_checkpoint_as_its_reference(tiny_overrides, tmp_path):
    """Stage 2's reference is stage 1's final model, also when stage 2 resumes from a checkpoint."""
    common = tiny_overrides + ["algorithm.name=sft_then_grpo", "algorithm.sft_stage_steps=1", "training.max_steps=3",
                               "algorithm.beta_kl=0.1", "training.learning_rate=1e-2", "training.save_steps=2"]
    straight = train(common + [f"training.output_dir={tmp_path / 'straight'}"], reward_funcs=[low_token_reward])
    assert straight[1]["kl"] == pytest.approx(0.0, abs=1e-6) and straight[2]["kl"] > 1e-4  # step 2 is GRPO's first

    resumed = UniAPLConfig.from_yaml(None, common + [f"training.output_dir={tmp_path / 'resumed'}"])
    with pytest.raises(KeyboardInterrupt):  # during step 3, after the checkpoint of step 2
        UniAPLTrainer(args=resumed, reward_funcs=[StopAfter(calls=1, reward=low_token_reward)]).train()
    UniAPLTrainer(args=resumed, reward_funcs=[low_token_reward]).train(resume=True)
    assert read_metrics(tmp_path / "resumed")[2]["kl"] == pytest.approx(straight[2]["kl"], rel=1e-5)


# ---- 3. demonstrations are whole, and tokenized once ---------------------------------------------


def test_over_long_demonstrations_are_left_out_not_cut(tiny_overrides, monkeypatch):
    """With max_demo_length 9 (tokens with EOS), 4 of the 8 toy demonstrations fit. SFT trains on whole
    demonstrations that end with EOS, never on 'Go to bed at the<|im_end|>'."""
    from conftest import TOY_ROWS

    import uniapl.train.batch as batch_module

    trained, pack = [], batch_module.pack
    monkeypatch.setattr(batch_module, "pack", lambda prompts, completions, pad: trained.extend(completions) or pack(prompts, completions, pad))
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft", "data.max_demo_length=9", "training.max_steps=4"])
    with pytest.warns(UniaplWarning, match="max_demo_length=9: 4 of 8 expert demonstrations are longer"):
        trainer = UniAPLTrainer(args=config)
    trainer.train()
    tokenizer = trainer.tokenizer
    whole = {c for _, c in TOY_ROWS}
    assert len(trained) == 8
    for ids in trained:
        assert len(ids) <= 9 and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids[:-1]) in whole


def test_luffy_scores_its_expert_member_on_the_ids_it_trains(tiny_overrides):
    from uniapl.models import load_tokenizer

    tokenizer = load_tokenizer(UniAPLConfig.from_yaml(None, tiny_overrides).model.name)
    checked = []

    def ids_match_text(prompts, completions, completion_ids, **kwargs):
        for completion, ids in zip(completions, completion_ids):
            checked.append(completion[0]["content"] == tokenizer.decode(ids, skip_special_tokens=True))
        return [0.0] * len(completions)

    with pytest.warns(UniaplWarning, match="4 of 8 expert demonstrations are longer"):
        train(tiny_overrides + ["algorithm.name=luffy", "data.max_demo_length=9"], reward_funcs=[ids_match_text])
    assert checked and all(checked)  # rollouts and expert members alike


def test_no_demonstration_fits_is_an_error(tiny_overrides):
    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["data.max_demo_length=3"])
    with pytest.raises(DataError, match="data.max_demo_length=3: all 8 expert demonstrations are longer"):
        UniAPLTrainer(args=config)


# ---- 4. CHORD as in the paper --------------------------------------------------------------------


def test_chord_mixes_rl_and_sft_convexly(tiny_overrides, tmp_path):
    """CHORD's loss is (1 - mu) * L_RL + mu * L_SFT: with mu held at 1 the RL term drops out, and the update is SFT's."""
    common = tiny_overrides + ["training.learning_rate=1e-3"]
    train(common + ["algorithm.name=sft", f"training.output_dir={tmp_path / 'sft'}"])
    rows = train(common + ["algorithm.name=chord", "algorithm.schedule_warmup_steps=0", "algorithm.schedule_peak=1.0",
                           "algorithm.schedule_final=1.0", f"training.output_dir={tmp_path / 'chord'}"],
                 reward_funcs=[low_token_reward])
    assert [r["lambda"] for r in rows] == [1.0, 1.0]
    assert all(r["reward/std"] > 0 for r in rows)  # the RL term has a gradient that the weight 1 - mu = 0 removes
    sft, chord = final_state(tmp_path / "sft"), final_state(tmp_path / "chord")
    for key in sft:
        torch.testing.assert_close(sft[key], chord[key], rtol=0, atol=1e-5, msg=key)


def test_chord_phi_as_documented_keeps_mu_constant(tiny_overrides):
    rows = train(tiny_overrides + ["algorithm.name=chord", "algorithm.sft_token_weighting=chord_phi", "algorithm.schedule_warmup_steps=0",
                                   "algorithm.schedule_peak=0.1", "algorithm.schedule_final=0.1", "training.max_steps=3"])
    assert [r["lambda"] for r in rows] == pytest.approx([0.1, 0.1, 0.1])


@pytest.mark.parametrize("field", ["schedule_peak", "schedule_final"])
def test_chord_mu_is_a_convex_weight(field, tiny_overrides):
    with pytest.raises(ConfigError, match=f"algorithm.{field}: must be in \\[0, 1\\]"):
        UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.{field}=1.5"])


# ---- 5. rollouts sample what training scores -----------------------------------------------------


def test_rollouts_sample_the_distribution_that_training_scores(tiny_model):
    """A model's own generation_config (Qwen2.5-Instruct ships repetition_penalty 1.05) must not reshape the
    rollout distribution: the sampler's log-probs equal the training forward's."""
    from uniapl.generation import SamplingParams, encode_prompts, generate
    from uniapl.models import load_model_and_tokenizer
    from uniapl.train.sequences import completion_logprobs

    model, tokenizer = load_model_and_tokenizer(tiny_model, "fp32")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10.0)  # peaked logits, as a trained model has
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 2
    prompts = encode_prompts(tokenizer, [[{"role": "user", "content": "Say hi to a friend."}]] * 4)
    params = SamplingParams(max_new_tokens=12, temperature=0.7)
    completions = generate(model, tokenizer, prompts, params, seeds=[11, 12, 13, 14])
    scored = completion_logprobs(model, prompts, [c.completion_ids for c in completions], tokenizer.pad_token_id, temperature=0.7)
    for completion, logprobs in zip(completions, scored):
        assert completion.logprobs == pytest.approx(logprobs, abs=1e-4)
    assert model.generation_config.repetition_penalty == 1.5  # the model's own settings are left as they were


# ---- 7. the adversarial reward waits for a trained discriminator ---------------------------------


def test_adversarial_reward_waits_for_the_discriminator(tiny_overrides):
    rows = train(tiny_overrides + ["algorithm.name=uniapl", "training.max_steps=4", "algorithm.alpha_adv=0.1",
                                   "algorithm.discriminator.warmup_steps=1", "algorithm.alpha_adv_warmup_steps=2"])
    # step 1 trains the discriminator only; the ramp starts after it: 0.1 x 1/2, then 0.1
    assert [r["adv/alpha"] for r in rows] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert all({"disc/acc_expert", "disc/acc_policy"} <= r.keys() for r in rows)


# ---- 8. RL needs groups of two or more -----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["grpo", "luffy", "uniapl", "sft_then_grpo"])
def test_rl_needs_two_generations_per_prompt(algorithm, tiny_overrides):
    with pytest.raises(ConfigError, match="rollout.num_generations: must be >= 2 for algorithm"):
        UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.name={algorithm}", "rollout.num_generations=1"])


def test_sft_takes_one_generation_per_prompt(tiny_overrides):
    UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft", "rollout.num_generations=1"])
