"""Every algorithm is a setting of one objective: L = L_GRPO + lambda * L_SFT + beta_kl * KL (CHORD's schedule
mixes the terms convexly: (1 - mu) * (L_GRPO + beta_kl * KL) + mu * L_SFT), where L_GRPO's reward is
r~ = r + alpha_adv * r_adv + alpha_anchor * a.

The table follows the spec's "Every baseline is a setting of the same objective", and its AAPA section for the
`*_aapa` algorithms: the fixed discriminator's anchoring reward `a` added to SFT (as a GRPO term on `a` alone),
GRPO and CHORD.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Components:
    use_rl: bool  # GRPO on the policy's own rollouts
    use_sft: bool  # the SFT term on expert demonstrations
    lambda_mode: str  # learned (dual ascent) | fixed | schedule (CHORD's mu: warm-up then decay, convex mix)
    use_adversarial: bool  # discriminator reward
    expert_in_group: bool  # LUFFY: the paired demonstration joins its prompt's group
    use_anchor: bool = False  # AAPA: the fixed discriminator's anchoring reward
    use_task_reward: bool = True  # the reward functions' score in r~ (AAPA's SFT: the anchoring reward alone)


PRESETS: dict[str, Components] = {
    "sft": Components(use_rl=False, use_sft=True, lambda_mode="fixed", use_adversarial=False, expert_in_group=False),
    "grpo": Components(use_rl=True, use_sft=False, lambda_mode="fixed", use_adversarial=False, expert_in_group=False),
    "chord": Components(use_rl=True, use_sft=True, lambda_mode="schedule", use_adversarial=False, expert_in_group=False),
    "luffy": Components(use_rl=True, use_sft=False, lambda_mode="fixed", use_adversarial=False, expert_in_group=True),
    "uniapl": Components(use_rl=True, use_sft=True, lambda_mode="learned", use_adversarial=True, expert_in_group=False),
    "uniapl_no_adv": Components(use_rl=True, use_sft=True, lambda_mode="learned", use_adversarial=False, expert_in_group=False),
    "uniapl_fixed_lambda": Components(use_rl=True, use_sft=True, lambda_mode="fixed", use_adversarial=True, expert_in_group=False),
    "sft_aapa": Components(use_rl=True, use_sft=True, lambda_mode="fixed", use_adversarial=False, expert_in_group=False,
                           use_anchor=True, use_task_reward=False),
    "grpo_aapa": Components(use_rl=True, use_sft=False, lambda_mode="fixed", use_adversarial=False, expert_in_group=False,
                            use_anchor=True),
    "chord_aapa": Components(use_rl=True, use_sft=True, lambda_mode="schedule", use_adversarial=False, expert_in_group=False,
                             use_anchor=True),
}

# algorithms that run as stages, each a preset, the second starting from the first's final weights
STAGED: dict[str, tuple[str, str]] = {"sft_then_grpo": ("sft", "grpo"), "staged_aapa": ("sft_aapa", "grpo_aapa")}

# every value of `algorithm.name`
ALGORITHM_NAMES: tuple[str, ...] = (*PRESETS, *STAGED)
