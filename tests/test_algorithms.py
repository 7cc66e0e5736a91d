"""The pure algorithm code (uniapl/algorithms) on small cases whose expected values are worked out by hand.

Each expected value carries its arithmetic in a comment, so a failure shows which formula moved.
"""

from __future__ import annotations

import math

import pytest
import torch

from uniapl.algorithms import advantages as adv_lib
from uniapl.algorithms import losses
from uniapl.algorithms.adversarial import accuracy, adversarial_reward, adversarial_weight, discriminator_loss, mean_pool
from uniapl.algorithms.dual import Multiplier, TermWeights, dual_ascent, ema, warmup_decay
from uniapl.algorithms.presets import PRESETS

EPS = adv_lib.ADVANTAGE_EPS


def close(actual, expected, tol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32), torch.as_tensor(expected, dtype=torch.float32), atol=tol, rtol=0)


# ---- clipped GRPO loss ---------------------------------------------------------------------------

RATIOS = torch.tensor([[0.5, 1.0, 1.5]])  # old_logp = 0, so logp = log(ratio)


@pytest.mark.parametrize(
    "advantage, expected_loss, expected_low, expected_high",
    [
        # A = +1: min(rho, clip(rho, 0.8, 1.28)) = min([.5, 1, 1.5], [.8, 1, 1.28]) = [.5, 1, 1.28]; loss is minus that.
        # The 1.5 token is clipped at 1 + eps_high = 1.28 (a symmetric 0.2 would give 1.2).
        (1.0, [-0.5, -1.0, -1.28], [False, False, False], [False, False, True]),
        # A = -1: min(-rho, -clip(rho)) = min([-.5, -1, -1.5], [-.8, -1, -1.28]) = [-.8, -1, -1.5]; loss [.8, 1, 1.5].
        # The 0.5 token is clipped at 1 - eps_low = 0.8; the 1.5 token is not clipped (the pessimistic side wins).
        (-1.0, [0.8, 1.0, 1.5], [True, False, False], [False, False, False]),
    ],
)
def test_clipped_loss_uses_asymmetric_range(advantage, expected_loss, expected_low, expected_high):
    out = losses.clipped_policy_loss(torch.log(RATIOS), torch.zeros_like(RATIOS), torch.tensor([advantage]), eps_low=0.2, eps_high=0.28)
    close(out.per_token, [expected_loss])
    assert out.clipped_low.tolist() == [expected_low]
    assert out.clipped_high.tolist() == [expected_high]


def test_clipped_tokens_get_no_gradient():
    # A = +1: d(-rho)/d logp = -rho for the unclipped tokens (0.5 and 1.0); the clipped 1.5 token gets 0.
    logp = torch.log(RATIOS).requires_grad_()
    losses.clipped_policy_loss(logp, torch.zeros_like(logp), torch.tensor([1.0]), 0.2, 0.28).per_token.sum().backward()
    close(logp.grad, [[-0.5, -1.0, 0.0]])


def test_clip_fractions_over_a_mask():
    # two sequences: A = +1 with ratios [0.5, 1.5, 2.0 (padding)], A = -1 with ratios [0.5, 0.7, 1.0]
    ratios = torch.tensor([[0.5, 1.5, 2.0], [0.5, 0.7, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = losses.clipped_policy_loss(torch.log(ratios), torch.zeros_like(ratios), torch.tensor([1.0, -1.0]), 0.2, 0.28)
    # high: only 1.5 (the 2.0 is padding) -> 1 of 5 real tokens; low: 0.5 and 0.7 of the second row -> 2 of 5
    assert ((out.clipped_high * mask).sum() / mask.sum()).item() == pytest.approx(1 / 5)
    assert ((out.clipped_low * mask).sum() / mask.sum()).item() == pytest.approx(2 / 5)


# ---- aggregations --------------------------------------------------------------------------------

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])  # the 100s are padding and must not count
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "name, normalizers, expected",
    [
        ("token_mean", {}, 2.5),  # (1 + 2 + 3 + 4) / 4 tokens
        ("token_mean", {"num_tokens": 8}, 1.25),  # 10 / 8 tokens in the global batch
        ("seq_mean_token_mean", {}, 3.0),  # per sequence [6/3, 4/1] = [2, 4], mean 3
        ("seq_mean_token_mean", {"num_sequences": 4}, 1.5),  # (2 + 4) / 4 sequences in the global batch
        ("seq_mean_token_sum_norm", {}, 1.0),  # 10 / (2 sequences x max_length 5)
        ("seq_mean_token_sum_norm", {"num_sequences": 4}, 0.5),  # 10 / (4 x 5)
    ],
)
def test_aggregation(name, normalizers, expected):
    assert losses.AGGREGATIONS[name](VALUES, MASK, max_length=5, **normalizers).item() == pytest.approx(expected)


@pytest.mark.parametrize("name", sorted(losses.AGGREGATIONS))
def test_aggregation_of_an_empty_mask_is_zero(name):
    assert losses.AGGREGATIONS[name](VALUES, torch.zeros_like(MASK), max_length=5).item() == 0.0


# ---- group advantages ----------------------------------------------------------------------------

# group 1: [1, 0, 0, 1], mean 0.5, unbiased std sqrt(4 x 0.25 / 3) = sqrt(1/3); group 2: all 1, std 0
TWO_GROUPS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
SCALED = 0.5 / (math.sqrt(1 / 3) + EPS)


@pytest.mark.parametrize(
    "method, expected",
    [
        ("grpo", [SCALED, -SCALED, -SCALED, SCALED, 0, 0, 0, 0]),
        ("dr_grpo", [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]),  # centred only, no std scaling
    ],
)
def test_group_advantages(method, expected):
    close(adv_lib.ADVANTAGES[method](TWO_GROUPS, 4), expected)


@pytest.mark.parametrize("method", sorted(adv_lib.ADVANTAGES))
def test_group_of_one_has_zero_advantage(method):
    # each reward is its own group mean, and the std of one value is taken as 0 (not NaN)
    close(adv_lib.ADVANTAGES[method](torch.tensor([3.0, 5.0]), 1), [0.0, 0.0])


def test_rewards_must_split_into_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        adv_lib.grpo_advantages(torch.zeros(6), 4)


def test_normalize_separately_changes_the_sign():
    task, adversarial = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])
    # together: r~ = [1, 0] + 0.5 x [0, 4] = [1, 2]; mean 1.5, std sqrt(0.5) -> [-0.5, 0.5] / (sqrt(0.5) + eps)
    together = 0.5 / (math.sqrt(0.5) + EPS)
    close(adv_lib.combined_advantages([(task, 1.0), (adversarial, 0.5)], 2), [-together, together])
    # separately: task -> +-0.5 / (sqrt(0.5) + eps); r_adv [0, 4]: mean 2, std sqrt(8) -> -+2 / (sqrt(8) + eps), times 0.5
    first = 0.5 / (math.sqrt(0.5) + EPS) - 0.5 * 2 / (math.sqrt(8) + EPS)
    close(adv_lib.combined_advantages([(task, 1.0), (adversarial, 0.5)], 2, normalize_separately=True), [first, -first])


# ---- k3 KL and SFT NLL ---------------------------------------------------------------------------


def test_k3_kl_is_zero_at_equality_and_known_value():
    logp = torch.log(torch.tensor([[0.5, 0.9]]))
    close(losses.k3_kl(logp, logp), [[0.0, 0.0]])
    # d = log 0.25 - log 0.5 = log 0.5: exp(d) - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    close(losses.k3_kl(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))), [0.193147])


def test_k3_kl_is_non_negative():
    gen = torch.Generator().manual_seed(0)
    logp, ref = -5 * torch.rand(1000, generator=gen), -5 * torch.rand(1000, generator=gen)
    assert (losses.k3_kl(logp, ref) >= 0).all()


@pytest.mark.parametrize(
    "weighting, expected_value, expected_grad",
    [
        ("none", math.log(4), -1.0),  # -log 0.25 = 1.386294; d/dlogp = -1
        # p = 0.25: weight p(1 - p) = 0.1875 -> 0.1875 x 1.386294 = 0.259930. The weight is detached, so
        # d/dlogp = -0.1875 (through p it would add 1.386294 x (p - 2p^2) = +0.173287).
        ("chord_phi", 0.1875 * math.log(4), -0.1875),
    ],
)
def test_sft_token_nll(weighting, expected_value, expected_grad):
    logp = torch.log(torch.tensor([0.25])).requires_grad_()
    value = losses.sft_token_nll(logp, weighting)
    value.sum().backward()
    close(value, [expected_value])
    close(logp.grad, [expected_grad])


def test_sft_unknown_weighting_is_an_error():
    with pytest.raises(ValueError, match="unknown SFT token weighting"):
        losses.sft_token_nll(torch.zeros(1), "focal")


# ---- LUFFY shaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, expected_value, expected_grad",
    [
        # f = 0.1 / 0.2 = 0.5, loss -f x A = -1; d/dlogp = -A x gamma p / (p + gamma)^2 = -2 x 0.01 / 0.04 = -0.5
        (0.1, -1.0, -0.5),
        # f = 0.9 / 1.0 = 0.9, loss -1.8; d/dlogp = -2 x 0.09 / 1.0 = -0.18
        (0.9, -1.8, -0.18),
    ],
)
def test_luffy_shaping(p, expected_value, expected_grad):
    logp = torch.log(torch.tensor([[p]])).requires_grad_()
    value = losses.shaped_off_policy_loss(logp, torch.tensor([2.0]), gamma=0.1)
    value.sum().backward()
    close(value, [[expected_value]])
    close(logp.grad, [[expected_grad]])


# ---- the dual variable and the schedules -------------------------------------------------------


@pytest.mark.parametrize(
    "lam, constraint, expected",
    [
        (1.0, 3.0, 2.0),  # over budget: 1 + 0.5 x (3 - 1)
        (1.0, 0.5, 0.75),  # under budget: 1 + 0.5 x (0.5 - 1)
        (0.1, 0.0, 0.0),  # 0.1 + 0.5 x (0 - 1) = -0.4, clipped at 0
        (9.5, 3.0, 10.0),  # 9.5 + 1 = 10.5, clipped at lambda_max 10
    ],
)
def test_dual_ascent_step(lam, constraint, expected):
    assert dual_ascent(lam, constraint, epsilon=1.0, eta=0.5, lambda_max=10.0) == pytest.approx(expected)


def test_dual_ascent_rises_over_budget_and_falls_to_zero_within_it():
    lam, path = 1.0, []
    for constraint in [3.0] * 3 + [0.0] * 10:
        lam = dual_ascent(lam, constraint, epsilon=1.0, eta=0.5, lambda_max=10.0)
        path.append(lam)
    assert path[:3] == pytest.approx([2.0, 3.0, 4.0])  # +0.5 x 2 each step
    assert path[3:11] == pytest.approx([3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0])  # -0.5 each step
    assert path[11:] == [0.0, 0.0]  # stays at the bound


@pytest.mark.parametrize(
    "previous, decay, expected",
    [(None, 0.75, 4.0), (2.0, 0.75, 2.5), (2.0, 0.0, 4.0)],  # first value starts it; 0.75 x 2 + 0.25 x 4; no smoothing
)
def test_ema(previous, decay, expected):
    assert ema(previous, 4.0, decay) == pytest.approx(expected)


@pytest.mark.parametrize(
    "step, shape, expected",
    [
        (0, "cosine", 0.0),  # the warm-up starts at 0: 1 x 0 / 2
        (1, "cosine", 0.5),  # 1 x 1 / 2
        (2, "cosine", 1.0),  # the peak, at step warmup_steps
        (3, "cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 7))),  # decay over steps 2..9: progress 1/7 -> 0.955143
        (3, "linear", 1 - 0.9 / 7),  # 1 + (0.1 - 1) x 1/7 = 0.871429
        (9, "cosine", 0.1),  # the last step (total_steps - 1) is at final
        (9, "linear", 0.1),
        (20, "linear", 0.1),  # past the end it stays at final
    ],
)
def test_warmup_decay(step, shape, expected):
    assert warmup_decay(step, peak=1.0, final=0.1, warmup_steps=2, total_steps=10, shape=shape) == pytest.approx(expected)


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_warmup_decay_holds_the_peak_once_and_ends_at_final(shape):
    # warm-up 2 of 5 steps: 0, 1/2, the peak, then halfway (cos(pi/2) = 0, so both shapes give 0.55), then final
    mu = [warmup_decay(step, peak=1.0, final=0.1, warmup_steps=2, total_steps=5, shape=shape) for step in range(5)]
    assert mu == pytest.approx([0.0, 0.5, 1.0, 0.55, 0.1])


def test_warmup_decay_without_warmup_starts_at_peak():
    assert warmup_decay(0, peak=2.0, final=0.0, warmup_steps=0, total_steps=4) == pytest.approx(2.0)


# ---- the discriminator ---------------------------------------------------------------------------


def manual_bce(logit: float, target: float) -> float:
    """-(y log sigmoid(s) + (1 - y) log(1 - sigmoid(s))), written out with math."""
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


EXPERT_LOGITS, POLICY_LOGITS = [0.0, 2.0], [-1.0]


def test_discriminator_loss_value():
    # expert: mean(-log sigmoid(0), -log sigmoid(2)) = mean(0.693147, 0.126928) = 0.410038
    # policy: -log(1 - sigmoid(-1)) = -log sigmoid(1) = 0.313262; total 0.723300
    loss = discriminator_loss(torch.tensor(EXPERT_LOGITS), torch.tensor(POLICY_LOGITS))
    assert loss.item() == pytest.approx(0.723300, abs=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_discriminator_loss_matches_the_formula(smoothing):
    expected = sum(manual_bce(s, 1 - smoothing) for s in EXPERT_LOGITS) / len(EXPERT_LOGITS) + sum(
        manual_bce(s, smoothing) for s in POLICY_LOGITS
    ) / len(POLICY_LOGITS)
    loss = discriminator_loss(torch.tensor(EXPERT_LOGITS), torch.tensor(POLICY_LOGITS), label_smoothing=smoothing)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_adversarial_reward_keeps_sign_and_clips():
    logits = torch.tensor([-5.0, -1.0, 0.5, 4.0], requires_grad=True)
    reward = adversarial_reward(logits, clip=3.0)
    close(reward, [-3.0, -1.0, 0.5, 3.0])  # expert-like (s > 0) is rewarded, policy-like penalized
    assert not reward.requires_grad  # a reward, not a path for the policy's gradient into the discriminator


def test_discriminator_accuracy():
    # expert scored expert when s > 0: [1, -1, 2, 0] -> 2 of 4 (0 is not > 0); policy when s < 0: [-1, -2, 3] -> 2 of 3
    acc_expert, acc_policy = accuracy(torch.tensor([1.0, -1.0, 2.0, 0.0]), torch.tensor([-1.0, -2.0, 3.0]))
    assert (acc_expert, acc_policy) == pytest.approx((0.5, 2 / 3))
    assert all(math.isnan(x) for x in accuracy(torch.zeros(0), torch.zeros(0)))


def test_mean_pool_over_response_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [7.0, 7.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    # row 1: mean of the first two positions = [2, 3]; row 2 has no response token -> zeros, not NaN
    close(mean_pool(hidden, mask), [[2.0, 3.0], [0.0, 0.0]])


def test_adversarial_weight_ramps_after_the_warmup():
    # warm-up 2 steps at 0, then 0.1 x k / 4 for the ramp's k-th step, then 0.1
    alphas = [adversarial_weight(step, alpha_adv=0.1, warmup_steps=2, ramp_steps=4) for step in range(8)]
    assert alphas == pytest.approx([0.0, 0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert adversarial_weight(2, alpha_adv=0.1, warmup_steps=2, ramp_steps=0) == 0.1  # no ramp: full weight after the warm-up


def test_discriminator_loss_weighs_each_class_equally():
    # far more policy rows than expert rows (the quickstart has 16 rollouts and 4 demonstrations a step): a mean
    # per class, then their sum, so repeating the policy rows changes nothing and the expert class keeps half the weight
    expert, policy = torch.tensor(EXPERT_LOGITS), torch.tensor(POLICY_LOGITS)
    assert discriminator_loss(expert, policy.repeat(8)).item() == pytest.approx(discriminator_loss(expert, policy).item())


# ---- presets follow the spec's table -------------------------------------------------------------


@pytest.mark.parametrize(
    "name, rl, sft, lambda_mode, adversarial, expert_in_group",
    [
        ("sft", False, True, "fixed", False, False),
        ("grpo", True, False, "fixed", False, False),
        ("chord", True, True, "schedule", False, False),
        ("luffy", True, False, "fixed", False, True),
        ("uniapl", True, True, "learned", True, False),
        ("uniapl_no_adv", True, True, "learned", False, False),
        ("uniapl_fixed_lambda", True, True, "fixed", True, False),
    ],
)
def test_preset(name, rl, sft, lambda_mode, adversarial, expert_in_group):
    preset = PRESETS[name]
    assert (preset.use_rl, preset.use_sft, preset.use_adversarial, preset.expert_in_group) == (rl, sft, adversarial, expert_in_group)
    if sft:  # lambda is not used without the SFT term
        assert preset.lambda_mode == lambda_mode



def test_growing_kv_cache_decodes_exactly_like_transformers_default(tiny_model):
    """The in-place cache (no per-step concatenation) gives token-for-token the same greedy output."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    from uniapl.generation.kv_cache import GrowingCache

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.randint(5, 500, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded row
    config = GenerationConfig(max_new_tokens=80, min_new_tokens=80, do_sample=False, pad_token_id=0, eos_token_id=None)
    cache = GrowingCache()
    grown = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, cache=cache)
    assert torch.equal(grown, model.generate(input_ids=ids, attention_mask=mask, generation_config=config))
    assert cache.layers[0]._key_buffer.shape[-2] == 128  # grew by doubling past its first 64 slots
    cache.batch_select_indices(torch.tensor([2, 0]))
    cache.crop(-5)
    assert cache.layers[0].keys.shape == (2, cache.layers[0].keys.shape[1], 7 + 80 - 1 - 5, cache.layers[0].keys.shape[-1])


def test_the_multiplier_weighs_the_sft_term_in_each_mode_and_learns_only_when_learned():
    from uniapl.config import AlgorithmConfig

    config = AlgorithmConfig(lambda_init=1.0, eta_lambda=0.5, epsilon=1.0, lambda_fixed=0.3, schedule_peak=0.8, schedule_final=0.8,
                             schedule_warmup_steps=0)
    multiplier = Multiplier(config)
    assert multiplier.weights("learned", use_sft=False, stage_step=0, stage_steps=4) == TermWeights(rl=1.0, sft=0.0)
    assert multiplier.weights("fixed", True, 0, 4) == TermWeights(rl=1.0, sft=0.3)
    assert multiplier.weights("schedule", True, 2, 4) == TermWeights(rl=pytest.approx(0.2), sft=pytest.approx(0.8))
    multiplier.dual_step("fixed", 3.0)  # only the learned lambda moves
    assert multiplier.weights("learned", True, 0, 4).sft == 1.0
    multiplier.dual_step("learned", 3.0)  # over budget: 1 + 0.5 * (3 - 1)
    multiplier.dual_step("learned", float("nan"))  # a non-finite C_batch leaves it as it is
    assert multiplier.weights("learned", True, 0, 4).sft == pytest.approx(2.0)
    restored = Multiplier(config)
    restored.load_state_dict(multiplier.state_dict())
    assert restored.state_dict() == {"lambda": pytest.approx(2.0), "c_ema": 3.0}
