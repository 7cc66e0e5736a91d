"""The parts of one training step, in the order UniAPLTrainer._step runs them:

rows -> batch layout -> first pass -> advantages -> micro-batch backward -> optimizer -> dual step -> discriminator.

Here: the rows and their layout (`StepRows`, `BatchLayout`), what the first pass learns of every row
(`FirstPass`), a micro-batch's loss (`StepLoss`), the LUFFY variant of a group (`GroupMember`,
`ExpertMember`) and the step's clock. The losses themselves are the pure functions of uniapl.algorithms.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch

from uniapl.algorithms import losses
from uniapl.config import AlgorithmConfig
from uniapl.train import metric_names as M
from uniapl.train.sequences import SequenceBatch, TokenScores, pack

ROLLOUT, EXPERT_MEMBER, DEMO = "rollout", "expert_member", "demo"


@dataclass
class TrainRow:
    """One row of the mixed batch."""

    prompt_ids: list[int]
    completion_ids: list[int]
    kind: str  # ROLLOUT (on-policy), EXPERT_MEMBER (LUFFY, off-policy in a group) or DEMO (SFT)


@dataclass
class StepRows:
    """The step's rows, and the task rewards of its RL rows in group layout (each prompt's rollouts, then its
    expert member under LUFFY)."""

    rows: list[TrainRow]
    task_rewards: torch.Tensor
    n_generated: int  # tokens generated on this process


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
    advantages_pass: int  # the first pass with an RL row: the advantages must be known before its loss

    @classmethod
    def build(cls, rows: list[TrainRow], pad_id: int, device, temperature: float, micro_batch_size: int | None,
              global_sum: Callable[[float], float], split_demonstrations: bool) -> "BatchLayout":
        batch = pack([r.prompt_ids for r in rows], [r.completion_ids for r in rows], pad_id).to(device)
        kind = lambda *kinds: torch.tensor([r.kind in kinds for r in rows], device=device)  # noqa: E731
        rl, on_policy, demo = kind(ROLLOUT, EXPERT_MEMBER), kind(ROLLOUT), kind(DEMO)
        mask = batch.completion_mask
        passes = plan_passes(rows, micro_batch_size or len(rows), split_demonstrations)
        return cls(
            batch=batch, rl=rl, on_policy=on_policy, demo=demo,
            temperatures=torch.where(rl, temperature, 1.0).float(),
            n_rl_tokens=global_sum(mask[rl].sum().item()),
            n_rl_seqs=global_sum(rl.sum().item()),
            n_demo_tokens=global_sum(mask[demo].sum().item()),
            micro_batches=[torch.tensor(p, device=device) for p in passes],
            advantages_pass=next((i for i, p in enumerate(passes) if any(rows[j].kind != DEMO for j in p)), 0),
        )

    @property
    def pooled_before_advantages(self) -> bool:
        """Whether the passes up to the advantages' own have forwarded every row, so that their pooled features
        are known without a separate no-grad pass."""
        return sum(len(p) for p in self.micro_batches[: self.advantages_pass + 1]) == len(self.rl)

    @property
    def mask(self) -> torch.Tensor:
        return self.batch.completion_mask

    @property
    def expert(self) -> torch.Tensor:
        """Rows the discriminator should call expert: demonstrations and LUFFY's expert members."""
        return self.demo | (self.rl & ~self.on_policy)


def padded_cost(rows: list[TrainRow]) -> int:
    """Tokens one pass forwards: each distinct prompt once, padded to the longest, and every completion padded
    to the longest completion."""
    prompts = {tuple(r.prompt_ids) for r in rows}
    return len(prompts) * max(len(p) for p in prompts) + len(rows) * max(max(len(r.completion_ids) for r in rows), 1)


def plan_passes(rows: list[TrainRow], size: int, split_demonstrations: bool) -> list[list[int]]:
    """Row indices of each forward/backward pass, at most `size` rows a pass. Rows with one prompt go to the same
    pass, which then forwards that prompt once. Demonstrations take passes of their own, ahead of the RL rows,
    where that forwards fewer padded tokens: a long demonstration would otherwise pad every rollout to its length."""
    prompt_order: dict[tuple, int] = {}
    for r in rows:
        prompt_order.setdefault(tuple(r.prompt_ids), len(prompt_order))

    def chunks(indices: list[int]) -> list[list[int]]:
        ordered = sorted(indices, key=lambda i: prompt_order[tuple(rows[i].prompt_ids)])  # stable: same prompt together
        return [ordered[s : s + size] for s in range(0, len(ordered), size)]
    joint = chunks(list(range(len(rows))))
    demos = [i for i, r in enumerate(rows) if r.kind == DEMO]
    others = [i for i, r in enumerate(rows) if r.kind != DEMO]
    if not split_demonstrations or not demos or not others:
        return joint
    split = chunks(demos) + chunks(others)
    cost = lambda passes: sum(padded_cost([rows[i] for i in p]) for p in passes)  # noqa: E731
    return split if cost(split) < cost(joint) else joint


class FirstPass:
    """What the step knows of every row before its loss: the log-probs the update's ratio starts from, the
    policy's entropy on its rollouts, the expert NLL the dual step constrains, and the pooled hidden states the
    head discriminator reads. Filled micro-batch by micro-batch, from no-grad passes or from the first
    iteration's own passes."""

    def __init__(self, layout: BatchLayout, ref_logp: torch.Tensor | None):
        self.layout = layout
        self.ref_logp = ref_logp  # [rows, C] or None without a KL term
        self.old_logp = torch.zeros_like(layout.mask)
        self.pooled: torch.Tensor | None = None
        self.recorded = torch.zeros_like(layout.rl)
        self.sums: Counter = Counter()

    def record(self, idx: torch.Tensor, scores: TokenScores) -> None:
        if self.recorded[idx].all():
            return
        layout, mask = self.layout, self.layout.mask[idx]
        self.recorded[idx] = True
        self.old_logp[idx] = scores.logp.detach()
        if scores.pooled is not None:
            if self.pooled is None:
                self.pooled = scores.pooled.new_zeros(len(self.recorded), scores.pooled.shape[-1])
            self.pooled[idx] = scores.pooled
        policy, demo = layout.on_policy[idx], layout.demo[idx]
        self.sums.update({"entropy_sum": (scores.entropy[policy] * mask[policy]).sum().item(),
                          "entropy_tokens": mask[policy].sum().item(),
                          "demo_nll": (-scores.logp.detach()[demo] * mask[demo]).sum().item()})

    @property
    def complete(self) -> bool:
        return bool(self.recorded.all())

    def metrics(self, global_sum: Callable[[float], float]) -> dict[str, float]:
        out = {}
        if self.layout.on_policy.any():
            out[M.ENTROPY] = self.sums["entropy_sum"] / max(self.sums["entropy_tokens"], 1.0)
        if self.layout.demo.any():
            out[M.C_BATCH] = global_sum(self.sums["demo_nll"]) / max(self.layout.n_demo_tokens, 1.0)
        return out


class GroupMember:
    """A group is a prompt's G rollouts and nothing else (every algorithm but LUFFY)."""

    size = 0  # rows each group adds to its rollouts

    def member_ids(self, prompt_keys: list[str]) -> list[list[int]]:
        return []

    def per_token_loss(self, clipped: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor,
                       on_policy: torch.Tensor) -> torch.Tensor:
        return clipped

    def adversarial_rewards(self, rollout_rewards: torch.Tensor, expert_rewards: torch.Tensor, rollouts_per_group: int) -> torch.Tensor:
        """r_adv of every RL row, in group layout."""
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

    def adversarial_rewards(self, rollout_rewards, expert_rewards, rollouts_per_group):
        # expert members come before the SFT demonstrations in batch order
        n_groups = len(rollout_rewards) // rollouts_per_group
        members = expert_rewards[:n_groups, None]
        return torch.cat([rollout_rewards.view(n_groups, rollouts_per_group), members], dim=1).view(-1)

    def max_rl_length(self, max_new_tokens, max_demo_length):
        return max(max_new_tokens, max_demo_length)


@dataclass
class TermWeights:
    """The weights of the step's loss terms: L = rl * L_RL + sft * L_SFT."""

    rl: float
    sft: float  # lambda, or CHORD's mu


@dataclass
class StepLoss:
    """A micro-batch's share of the step's loss, normalized by the whole step's (global) counts so that the shares
    add up to the loss of the batch taken at once. Its metric sums add up in `sums`."""

    algorithm: AlgorithmConfig
    use_rl: bool
    use_sft: bool
    member: GroupMember
    max_rl_length: int
    weights: TermWeights
    world: int  # processes: each one's loss is scaled up, as DDP averages the gradients

    def __call__(self, layout: BatchLayout, first: FirstPass, idx: torch.Tensor, logp: torch.Tensor,
                 advantages: torch.Tensor | None, sums: Counter) -> torch.Tensor:
        """The micro-batch's share of the step's loss; `advantages` is None only before the advantages pass, whose
        micro-batches hold demonstrations alone."""
        a = self.algorithm
        rl, policy, demo, mask = layout.rl[idx], layout.on_policy[idx], layout.demo[idx], layout.mask[idx]
        loss = 0.0 * logp.sum()  # in the graph even when no row of this micro-batch has a loss term
        if self.use_rl and rl.any():
            rl_logp, rl_mask, rl_adv = logp[rl], mask[rl], advantages[idx][rl]
            clipped = losses.clipped_policy_loss(rl_logp, first.old_logp[idx][rl], rl_adv, a.eps_low, a.eps_high)
            per_token = self.member.per_token_loss(clipped.per_token, rl_logp, rl_adv, policy[rl])
            if first.ref_logp is not None:
                kl = losses.k3_kl(rl_logp, first.ref_logp[idx][rl])
                per_token = per_token + a.beta_kl * kl
                sums.update({"kl_sum": (kl.detach() * rl_mask).sum().item(), "rl_tokens": rl_mask.sum().item()})
            rl_loss = losses.AGGREGATIONS[a.loss_aggregation](per_token, rl_mask, max_length=self.max_rl_length,
                                                              num_tokens=layout.n_rl_tokens, num_sequences=layout.n_rl_seqs)
            loss = loss + self.weights.rl * rl_loss * self.world
            on_mask = rl_mask * policy[rl][:, None]
            sums.update({"rl_loss": rl_loss.item(), "on_policy_tokens": on_mask.sum().item(),
                         "clipped_low": (clipped.clipped_low * on_mask).sum().item(),
                         "clipped_high": (clipped.clipped_high * on_mask).sum().item()})
        if self.use_sft and demo.any():
            sft_tokens = losses.sft_token_nll(logp[demo], a.sft_token_weighting)
            sft_loss = losses.token_mean(sft_tokens, mask[demo], max_length=0, num_tokens=layout.n_demo_tokens)
            loss = loss + self.weights.sft * sft_loss * self.world
            sums.update({"sft_loss": sft_loss.item()})
        return loss

    def metrics(self, layout: BatchLayout, sums: Counter, with_kl: bool) -> dict[str, float]:
        """The loss metrics of one iteration over the micro-batches."""
        out = {}
        if self.use_rl:
            on_policy_tokens = max(sums["on_policy_tokens"], 1.0)
            out[M.LOSS_RL] = sums["rl_loss"] * self.world
            out[M.CLIP_LOW_FRAC] = sums["clipped_low"] / on_policy_tokens
            out[M.CLIP_HIGH_FRAC] = sums["clipped_high"] / on_policy_tokens
            if with_kl:
                out[M.KL] = sums["kl_sum"] / max(sums["rl_tokens"], 1.0)
        if self.use_sft and layout.demo.any():
            out[M.LOSS_SFT] = sums["sft_loss"] * self.world
        return out


@contextlib.contextmanager
def timed(metrics: dict, name: str):
    """Add the block's wall time to metrics[name]; on a GPU, after its queued work has run."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        metrics[name] = metrics.get(name, 0.0) + time.perf_counter() - start
