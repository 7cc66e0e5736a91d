"""What a group of rollouts holds: a prompt's G rollouts (`GroupMember`), or those and the prompt's paired
demonstration as an off-policy member (LUFFY's `ExpertMember`)."""

from __future__ import annotations

import torch

from uniapl.algorithms import losses


class GroupMember:
    """A group is a prompt's G rollouts and nothing else (every algorithm but LUFFY)."""

    size = 0  # rows each group adds to its rollouts

    def member_ids(self, prompt_keys: list[str]) -> list[list[int]]:
        return []

    def per_token_loss(self, clipped: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor,
                       on_policy: torch.Tensor) -> torch.Tensor:
        return clipped

    def group_rewards(self, rollout_rewards: torch.Tensor, member_rewards: torch.Tensor, rollouts_per_group: int) -> torch.Tensor:
        """A reward scored apart from the task reward (r_adv, the anchoring reward) of every RL row, in group layout."""
        return rollout_rewards

    def max_rl_length(self, max_new_tokens: int, max_demo_length: int) -> int:
        """The constant of Dr. GRPO's normalizer: the longest any RL row can be."""
        return max_new_tokens


class ExpertMember(GroupMember):
    """LUFFY: each group also holds its prompt's paired demonstration, an off-policy member scored like a
    rollout and trained with the shaped loss -f(p) * A, f(p) = p / (p + gamma)."""

    size = 1

    def __init__(self, demo_ids_by_prompt: dict[str, list[int]], gamma: float):
        self.demo_ids_by_prompt = demo_ids_by_prompt
        self.gamma = gamma

    def member_ids(self, prompt_keys: list[str]) -> list[list[int]]:
        return [self.demo_ids_by_prompt[key] for key in prompt_keys]

    def per_token_loss(self, clipped, logp, advantages, on_policy):
        shaped = losses.shaped_off_policy_loss(logp, advantages, self.gamma)
        return torch.where(on_policy[:, None], clipped, shaped)

    def group_rewards(self, rollout_rewards, member_rewards, rollouts_per_group):
        n_groups = len(rollout_rewards) // rollouts_per_group
        return torch.cat([rollout_rewards.view(n_groups, rollouts_per_group), member_rewards[:, None]], dim=1).view(-1)

    def max_rl_length(self, max_new_tokens, max_demo_length):
        return max(max_new_tokens, max_demo_length)
