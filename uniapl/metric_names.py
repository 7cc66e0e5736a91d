"""The names of the per-step metrics in metrics.jsonl and TensorBoard: one contract for the trainer that writes
them and the report that reads them, so that a renamed metric cannot silently drop out of a report."""

from __future__ import annotations

STAGE = "stage"
PROCESSES = "processes"
LR = "lr"  # the learning rate of the step's first optimizer update

# rollouts
REWARD_MEAN = "reward/mean"
REWARD_STD = "reward/std"
LENGTH_MEAN = "length/mean"
LENGTH_MIN = "length/min"
LENGTH_MAX = "length/max"
TRUNCATED_FRAC = "length/truncated_frac"
ENTROPY = "entropy"  # mean per-token entropy of the policy on its own rollouts, at the sampling temperature
# |log-prob the rollout engine sampled a token with - the trainer's log-prob of it|, over the step's rollout tokens: the
# drift check of an engine with its own copy of the weights (docs/vllm.md says what is normal); logged without top-k/top-p
ENGINE_LOGP_DIFF_MAX = "rollout/logp_diff_max"
ENGINE_LOGP_DIFF_MEAN = "rollout/logp_diff_mean"


def reward_of(function_name: str) -> str:
    """The mean of one reward function over the step's rollouts."""
    return f"reward/{function_name}"


# losses and the update
LOSS_RL = "loss/rl"
LOSS_SFT = "loss/sft"
CLIP_LOW_FRAC = "clip/low_frac"
CLIP_HIGH_FRAC = "clip/high_frac"
KL = "kl"
GRAD_NORM = "grad_norm"
SKIPPED_UPDATES = "skipped_updates"  # the step's optimizer updates skipped for a non-finite gradient norm

# the SFT constraint and its multiplier
C_BATCH = "c_batch"  # per-token expert NLL of the step's demonstrations
LAMBDA = "lambda"  # lambda, or CHORD's mu
EPSILON = "epsilon"

# the discriminator and its reward
DISC_ACC_EXPERT = "disc/acc_expert"
DISC_ACC_POLICY = "disc/acc_policy"
DISC_LOSS = "disc/loss"
DISC_SKIPPED = "disc/skipped"
ADV_REWARD_MEAN = "adv/r_adv_mean"
ADV_ALPHA = "adv/alpha"

# AAPA's fixed discriminator and its anchoring reward
ANCHOR_SCORE_MEAN = "anchor/score_mean"  # its logit, mean over the step's rollouts
ANCHOR_REWARD_MEAN = "anchor/reward_mean"  # the anchoring reward a = f(logit), mean over the step's rollouts
ANCHOR_WEIGHT = "anchor/weight"
ANCHOR_HELDOUT_EXPERT = "anchor/heldout_expert_score"  # the drift check: its mean logit on fixed held-out expert responses

# where a step's time goes, in seconds; training = first pass + backward + optimizer
TIME_GENERATION = "time/generation"
TIME_SCORING = "time/scoring"
TIME_FIRST_PASS = "time/first_pass"  # before any loss: no-grad passes (the reference model, pooled features), the advantages
TIME_BACKWARD = "time/backward"  # forward and backward passes with gradients
TIME_OPTIMIZER = "time/optimizer"  # clipping, the optimizer step, the rollout model's weight sync
TIME_TRAINING = "time/training"
TIME_STEP = "time/step"
TOKENS_PER_S = "perf/tokens_per_s"  # generated tokens per second of the whole step
