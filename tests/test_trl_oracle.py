"""TRL 1.16 as an oracle: on the same log-probs, rewards and masks, our loss and advantages equal what
TRL's own GRPOTrainer code computes.

The trainer is a real GRPOTrainer on the tiny random model; only its log-prob forward, its generation
and its reward calls are replaced, so that both sides see identical inputs. The mapping:
- token_mean <-> "bnpo" (local token mean) and "dapo" (token sum / num_items_in_batch, the global count:
  our `num_tokens`);
- seq_mean_token_mean <-> "grpo";
- seq_mean_token_sum_norm <-> "dr_grpo" (our max_length is TRL's max_completion_length);
- advantages "grpo" <-> scale_rewards="group", "dr_grpo" <-> scale_rewards="none". Both use the unbiased
  (n - 1) std and add 1e-4 to it, so no parameter needs adjusting.
One difference by design: TRL 1.16 multiplies the k3 KL term by the ratio rho by default
(use_bias_correction_kl=True, DeepSeek-V3.2's unbiased reverse-KL gradient); our beta_kl * k3 has no such
factor. That changes the value and the gradient whenever beta > 0, so the oracle sets it to False.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from uniapl.algorithms import advantages as adv_lib  # noqa: E402
from uniapl.algorithms import losses  # noqa: E402

EPS_LOW, EPS_HIGH = 0.2, 0.28
MAX_LENGTH = 6  # TRL's max_completion_length; the completions below are at most 5 tokens
GROUP = 4


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from uniapl.models import resolve_model_path
    from uniapl.rewards.builtin import no_commas

    config = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")), use_cpu=True, per_device_train_batch_size=8,
        num_generations=GROUP, max_completion_length=MAX_LENGTH, beta=0.0, epsilon=EPS_LOW, epsilon_high=EPS_HIGH,
        report_to=[], save_strategy="no", use_bias_correction_kl=False,
    )
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}] * 8)
    trl_trainer = GRPOTrainer(model=resolve_model_path("tiny-random-smollm2"), reward_funcs=no_commas, args=config, train_dataset=prompts)
    trl_trainer.model.train()
    trl_trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by the loss
    yield trl_trainer
    # TRL's Accelerator set the process-wide state to bf16; later tests build uniapl's own (mixed_precision="no")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def fixed_batch():
    """Three sequences of lengths 5, 2 and 4, with ratios away from 1 so that both clip bounds are hit."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    old_logp = -3 * torch.rand(mask.shape, generator=gen)
    logp = old_logp + 0.6 * torch.randn(mask.shape, generator=gen)
    ref_logp = old_logp + 0.3 * torch.randn(mask.shape, generator=gen)
    return logp, old_logp, ref_logp, mask, torch.tensor([1.5, -0.7, 0.4])


def trl_loss(trainer, monkeypatch, loss_type: str, logp, old_logp, ref_logp, mask, advantages, beta, num_items):
    """TRL's `_compute_loss` on our fixed log-probs (its forward pass replaced), and its logged clip fractions."""
    monkeypatch.setattr(trainer, "loss_type", loss_type)
    monkeypatch.setattr(trainer, "beta", beta)
    monkeypatch.setattr(
        trainer, "_get_per_token_logps_and_entropies", lambda *args, **kwargs: (logp, torch.zeros_like(logp), None)
    )
    inputs = {
        "prompt_ids": torch.ones(mask.shape[0], 1, dtype=torch.long),
        "prompt_mask": torch.ones(mask.shape[0], 1, dtype=torch.long),
        "completion_ids": torch.ones_like(mask),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old_logp,
        "ref_per_token_logps": ref_logp,
        "num_items_in_batch": torch.tensor(num_items),
    }
    loss = trainer._compute_loss(trainer.model, inputs)
    metrics = trainer._metrics["train"]
    return loss, metrics["clip_ratio/low_mean"][-1], metrics["clip_ratio/high_mean"][-1]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize(
    "aggregation, loss_type, global_tokens",
    [
        ("token_mean", "bnpo", None),
        ("token_mean", "dapo", None),  # num_items_in_batch = this batch's 11 tokens
        ("token_mean", "dapo", 30),  # a shard of a 30-token global batch
        ("seq_mean_token_mean", "grpo", None),
        ("seq_mean_token_sum_norm", "dr_grpo", None),
    ],
)
def test_loss_matches_trl(trainer, monkeypatch, aggregation, loss_type, global_tokens, beta):
    logp, old_logp, ref_logp, mask, advantages = fixed_batch()
    mask_f = mask.float()
    num_items = global_tokens if global_tokens is not None else mask.sum().item()

    ours_logp = logp.clone().requires_grad_()
    clipped = losses.clipped_policy_loss(ours_logp, old_logp, advantages, EPS_LOW, EPS_HIGH)
    per_token = clipped.per_token + beta * losses.k3_kl(ours_logp, ref_logp)
    normalizers = {"num_tokens": global_tokens} if global_tokens is not None else {}
    ours = losses.AGGREGATIONS[aggregation](per_token, mask_f, max_length=MAX_LENGTH, **normalizers)
    ours.backward()

    trl_logp = logp.clone().requires_grad_()
    theirs, low_frac, high_frac = trl_loss(trainer, monkeypatch, loss_type, trl_logp, old_logp, ref_logp, mask, advantages, beta, num_items)
    theirs.backward()

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad, atol=1e-6, rtol=0)
    assert (clipped.clipped_low * mask_f).sum().item() / mask_f.sum().item() == pytest.approx(low_frac, abs=1e-6)
    assert (clipped.clipped_high * mask_f).sum().item() / mask_f.sum().item() == pytest.approx(high_frac, abs=1e-6)
    assert low_frac > 0 and high_frac > 0  # the batch exercises both clip bounds


def trl_advantages(trainer, monkeypatch, rewards: torch.Tensor, scale_rewards: str) -> torch.Tensor:
    """TRL's `_generate_and_score_completions` with generation and reward calls returning fixed values."""
    n = rewards.numel()
    prompts = [[{"role": "user", "content": f"prompt {i // GROUP}"}] for i in range(n)]
    completions = [[{"role": "assistant", "content": "ok"}] for _ in range(n)]
    generated = ([[1, 2]] * n, [[3, 4]] * n, None, completions, None, {}, None, None)
    monkeypatch.setattr(trainer, "scale_rewards", scale_rewards)
    monkeypatch.setattr(trainer, "_generate", lambda _prompts: generated)
    monkeypatch.setattr(trainer, "_calculate_rewards", lambda *args: rewards[:, None].clone())
    return trainer._generate_and_score_completions([{"prompt": p} for p in prompts])["advantages"]


@pytest.mark.parametrize("method, scale_rewards", [("grpo", "group"), ("dr_grpo", "none")])
def test_advantages_match_trl(trainer, monkeypatch, method, scale_rewards):
    # two groups of 4: mixed rewards, and a group with equal rewards (zero std)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.25, 1.0, 1.0, 1.0, 1.0])
    theirs = trl_advantages(trainer, monkeypatch, rewards, scale_rewards)
    torch.testing.assert_close(adv_lib.ADVANTAGES[method](rewards, GROUP), theirs, atol=1e-6, rtol=0)
