"""A step's mixed batch: its rows (rollouts, LUFFY's expert members, demonstrations), as tensors, and the plan of
its forward/backward passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from uniapl.train.anchor import AnchorScores
from uniapl.train.sequences import SequenceBatch, length_buckets, pack, passes_cost

ROLLOUT, EXPERT_MEMBER, DEMO = "rollout", "expert_member", "demo"


@dataclass
class TrainRow:
    """One row of the mixed batch."""

    prompt_ids: list[int]
    completion_ids: list[int]
    kind: str  # ROLLOUT (on-policy), EXPERT_MEMBER (LUFFY, off-policy in a group) or DEMO (SFT)
    sampling_logprobs: list[float] | None = None  # a rollout's, as its engine sampled it


@dataclass
class RolloutStats:
    """What the step's rollouts were like: their task rewards (over every process) and lengths."""

    reward_mean: float | None  # None without reward functions (AAPA's SFT may run on the anchoring reward alone)
    reward_std: float | None
    reward_by_function: dict[str, float]
    lengths: list[int]
    truncated_frac: float


@dataclass
class StepRows:
    """The step's rows, and the task rewards of its RL rows in group layout (each prompt's rollouts, then its
    expert member under LUFFY)."""

    rows: list[TrainRow]
    task_rewards: torch.Tensor
    rollouts: RolloutStats | None = None
    anchor: AnchorScores | None = None  # AAPA's discriminator on the rollouts


@dataclass
class BatchLayout:
    """The rows as tensors: which rows are what, the temperature each is scored at, the step's global counts
    that normalize every loss share, and the micro-batches of the forward/backward passes."""

    batch: SequenceBatch
    rl: torch.Tensor  # [rows] bool: rollouts and LUFFY's expert members
    on_policy: torch.Tensor  # [rows] bool: rollouts
    demo: torch.Tensor  # [rows] bool: SFT demonstrations
    temperatures: torch.Tensor  # [rows]: rollouts at the sampling temperature, demonstrations at 1
    n_rl_tokens: float
    n_rl_seqs: float
    n_demo_tokens: float
    micro_batches: list[torch.Tensor]  # row indices of each pass
    rl_pass: int | None  # the pass that holds every RL row, where one does

    @classmethod
    def build(cls, rows: list[TrainRow], pad_id: int, device, temperature: float, micro_batch_size: int | None,
              global_sum: Callable[[float], float], by_length: bool, keep_rl_together: bool) -> "BatchLayout":
        batch = pack([r.prompt_ids for r in rows], [r.completion_ids for r in rows], pad_id).to(device)
        kind = lambda *kinds: torch.tensor([r.kind in kinds for r in rows], device=device)  # noqa: E731
        rl, on_policy, demo = kind(ROLLOUT, EXPERT_MEMBER), kind(ROLLOUT), kind(DEMO)
        mask = batch.completion_mask
        passes = plan_passes(rows, micro_batch_size or len(rows), by_length, keep_rl_together)
        with_rl = [i for i, p in enumerate(passes) if any(rows[j].kind != DEMO for j in p)]
        return cls(
            batch=batch, rl=rl, on_policy=on_policy, demo=demo,
            temperatures=torch.where(rl, temperature, 1.0).float(),
            n_rl_tokens=global_sum(mask[rl].sum().item()),
            n_rl_seqs=global_sum(rl.sum().item()),
            n_demo_tokens=global_sum(mask[demo].sum().item()),
            micro_batches=[torch.tensor(p, device=device) for p in passes],
            rl_pass=with_rl[0] if len(with_rl) == 1 else None,
        )

    @property
    def mask(self) -> torch.Tensor:
        return self.batch.completion_mask

    @property
    def expert(self) -> torch.Tensor:
        """Rows the discriminator should call expert: demonstrations and LUFFY's expert members."""
        return self.demo | self.expert_members

    @property
    def expert_members(self) -> torch.Tensor:
        return self.rl & ~self.on_policy


def plan_passes(rows: list[TrainRow], size: int, by_length: bool, keep_rl_together: bool = False) -> list[list[int]]:
    """Row indices of each forward/backward pass, at most `size` rows a pass, and rows with one prompt in the same
    pass, which then forwards that prompt once. With `by_length`, the plan that forwards the fewest padded tokens
    (each pass counted `PASS_OVERHEAD_TOKENS` more) among: all rows together; the demonstrations in passes of their
    own, ahead of the RL rows; and both in length buckets, so that a long demonstration pads neither the rollouts nor
    the short demonstrations. `keep_rl_together` keeps the RL rows in as few passes as `size` allows (the head
    discriminator reads their pooled features before any loss, from one pass)."""
    prompt_order: dict[tuple, int] = {}
    for r in rows:
        prompt_order.setdefault(tuple(r.prompt_ids), len(prompt_order))

    def chunks(indices: list[int]) -> list[list[int]]:
        ordered = sorted(indices, key=lambda i: prompt_order[tuple(rows[i].prompt_ids)])  # stable: same prompt together
        return [ordered[s : s + size] for s in range(0, len(ordered), size)]

    joint = chunks(list(range(len(rows))))
    if not by_length:
        return joint
    demos = [i for i, r in enumerate(rows) if r.kind == DEMO]
    by_prompt: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r.kind != DEMO:
            by_prompt.setdefault(tuple(r.prompt_ids), []).append(i)
    rl_groups = list(by_prompt.values())
    rl_rows = [i for group in rl_groups for i in group]
    plans = [joint]
    if demos and rl_rows:
        plans.append(chunks(demos) + chunks(rl_rows))
    rl_plan = chunks(rl_rows) if keep_rl_together else length_buckets(rows, rl_groups, size)
    plans.append(length_buckets(rows, [[i] for i in demos], size) + rl_plan)
    return min(plans, key=lambda passes: passes_cost(rows, passes))  # the first of equals: fewer passes
