"""One training step, its phases in the order `TrainingStep.run` runs them:

rollouts -> layout -> first pass -> advantages -> backward -> optimizer -> dual step -> discriminator.

The rollouts phase also scores them with AAPA's fixed discriminator where a stage adds its anchoring reward.

Each phase returns what the next ones read, and the step returns a typed `StepOutput`, from which the
metrics are built at the end. The losses, advantages and the dual update are the pure functions of
uniapl.algorithms; the models, their passes and their optimizer belong to `PolicyModels`.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from uniapl import metric_names as M
from uniapl.algorithms import losses
from uniapl.algorithms.advantages import combined_advantages
from uniapl.algorithms.adversarial import accuracy, adversarial_reward, adversarial_weight
from uniapl.algorithms.dual import Multiplier, TermWeights
from uniapl.algorithms.presets import Components
from uniapl.config import AlgorithmConfig, UniAPLConfig
from uniapl.generation import Completion, SamplingParams, encode_prompts, sequence_seed
from uniapl.ifeval.prompts import prompt_text
from uniapl.rewards import WeightedReward, score
from uniapl.train.anchor import AnchorScores, FrozenAnchor
from uniapl.train.batch import DEMO, EXPERT_MEMBER, ROLLOUT, BatchLayout, RolloutStats, StepRows, TrainRow
from uniapl.train.data import Stream
from uniapl.train.discriminators import Discriminator, DiscriminatorUpdate
from uniapl.train.groups import ExpertMember, GroupMember
from uniapl.train.guard import FiniteUpdateGuard
from uniapl.train.policy import PolicyModels
from uniapl.train.sequences import TokenScores
from uniapl.train.state import TrainerState


@dataclass
class LossStats:
    """The loss terms of the step's last update, each the whole batch's (summed over its micro-batches)."""

    rl: float | None = None
    sft: float | None = None
    clip_low_frac: float | None = None
    clip_high_frac: float | None = None
    kl: float | None = None

    def finite_check_values(self) -> dict[str, float]:
        return {name: value for name, value in ((M.LOSS_RL, self.rl), (M.LOSS_SFT, self.sft)) if value is not None}


@dataclass
class AdversarialScores:
    """The discriminator's view of the step: its logits on the RL rows, read before the update, and the rewards
    r_adv = clip(logit, -c, c) they make."""

    policy_logits: torch.Tensor
    member_logits: torch.Tensor  # LUFFY's expert members
    policy_rewards: torch.Tensor
    member_rewards: torch.Tensor
    alpha: float


@dataclass
class StepOutput:
    """What a step did. The loop logs `metrics()`; nothing reads a value back out of the metrics."""

    lr: float
    weights: TermWeights | None  # None when the stage has no SFT term
    epsilon: float
    rollouts: RolloutStats | None = None
    entropy: float | None = None
    c_batch: float | None = None
    losses: LossStats = field(default_factory=LossStats)
    grad_norm: float | None = None
    skipped_updates: int = 0
    adversarial: AdversarialScores | None = None
    anchor: AnchorScores | None = None
    engine_logp_diff: tuple[float, float] | None = None  # (max, mean) over the rollout tokens
    disc_accuracy: tuple[float, float] | None = None  # on expert rows, on policy rows
    disc_update: DiscriminatorUpdate | None = None
    generated_tokens_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    processes: int = 1

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {M.TIME_GENERATION: 0.0, M.TIME_SCORING: 0.0, M.TIME_FIRST_PASS: 0.0, M.TIME_BACKWARD: 0.0,
                                 M.TIME_OPTIMIZER: 0.0, **self.timings}
        if self.rollouts is not None:
            r = self.rollouts
            if r.reward_mean is not None:
                out.update({M.REWARD_MEAN: r.reward_mean, M.REWARD_STD: r.reward_std})
            out.update({**{M.reward_of(name): value for name, value in r.reward_by_function.items()},
                        M.LENGTH_MEAN: float(np.mean(r.lengths)), M.LENGTH_MIN: float(min(r.lengths)),
                        M.LENGTH_MAX: float(max(r.lengths)), M.TRUNCATED_FRAC: r.truncated_frac})
        out[M.LR] = self.lr
        if self.engine_logp_diff is not None:
            out[M.ENGINE_LOGP_DIFF_MAX], out[M.ENGINE_LOGP_DIFF_MEAN] = self.engine_logp_diff
        optional = {M.ENTROPY: self.entropy, M.C_BATCH: self.c_batch, M.LOSS_RL: self.losses.rl, M.LOSS_SFT: self.losses.sft,
                    M.CLIP_LOW_FRAC: self.losses.clip_low_frac, M.CLIP_HIGH_FRAC: self.losses.clip_high_frac, M.KL: self.losses.kl,
                    M.GRAD_NORM: self.grad_norm}
        out.update({name: value for name, value in optional.items() if value is not None})
        out[M.SKIPPED_UPDATES] = self.skipped_updates
        if self.disc_accuracy is not None:
            out[M.DISC_ACC_EXPERT], out[M.DISC_ACC_POLICY] = self.disc_accuracy
        if self.adversarial is not None:
            out[M.ADV_REWARD_MEAN], out[M.ADV_ALPHA] = self.adversarial.policy_rewards.mean().item(), self.adversarial.alpha
        if self.anchor is not None:
            a = self.anchor
            out.update({M.ANCHOR_SCORE_MEAN: a.policy_logits.mean().item(), M.ANCHOR_REWARD_MEAN: a.policy_rewards.mean().item(),
                        M.ANCHOR_WEIGHT: a.weight})
            if a.heldout_expert_score is not None:
                out[M.ANCHOR_HELDOUT_EXPERT] = a.heldout_expert_score
        if self.weights is not None:
            out[M.LAMBDA], out[M.EPSILON] = self.weights.sft, self.epsilon
        if self.disc_update is not None:
            out[M.DISC_LOSS], out[M.DISC_SKIPPED] = self.disc_update.loss, float(self.disc_update.skipped)
        out[M.TIME_TRAINING] = out[M.TIME_FIRST_PASS] + out[M.TIME_BACKWARD] + out[M.TIME_OPTIMIZER]
        out.update({M.TIME_STEP: self.timings[M.TIME_STEP], M.TOKENS_PER_S: self.generated_tokens_per_s, M.PROCESSES: self.processes})
        return out


class FirstPass:
    """What the policy gives every row before the update: the log-probs the ratio starts from, its entropy on its
    rollouts, the expert NLL the dual step constrains, and the pooled hidden states the head discriminator reads.

    Every forward of the step records the rows it is the first to see. No row is forwarded twice for it: the
    no-grad passes of the first-pass phase record only what the advantages need before any loss, and the first
    iteration's passes with gradients record the rest. `carried` is a pass with gradients that the first-pass
    phase ran ahead, because its pooled features give the advantages; the backward phase starts with it."""

    def __init__(self, layout: BatchLayout, ref_logp: torch.Tensor | None):
        self.layout = layout
        self.ref_logp = ref_logp  # [rows, C] or None without a KL term
        self.old_logp = torch.zeros_like(layout.mask)
        self.pooled: torch.Tensor | None = None
        self.recorded = torch.zeros_like(layout.rl)
        self.sums: Counter = Counter()
        self.carried: tuple[int, TokenScores] | None = None

    def needs(self, idx: torch.Tensor) -> bool:
        return not bool(self.recorded[idx].all())

    def record(self, idx: torch.Tensor, scores: TokenScores) -> None:
        if not self.needs(idx):
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

    def entropy(self) -> float | None:
        """The policy's mean per-token entropy on this process's rollouts."""
        if not self.layout.on_policy.any():
            return None
        return self.sums["entropy_sum"] / max(self.sums["entropy_tokens"], 1.0)

    def c_batch(self, global_sum: Callable[[float], float]) -> float | None:
        """C_batch: the per-token NLL of the step's demonstrations, over every process."""
        if not self.layout.demo.any():
            return None
        return global_sum(self.sums["demo_nll"]) / max(self.layout.n_demo_tokens, 1.0)


@dataclass
class StepLoss:
    """A micro-batch's share of the step's loss, normalized by the whole step's (global) counts so that the shares
    add up to the loss of the batch taken at once. Its metric sums add up in `sums`."""

    algorithm: AlgorithmConfig
    use_rl: bool
    use_sft: bool
    member: GroupMember
    max_rl_length: int
    world: int  # processes: each one's loss is scaled up, as DDP averages the gradients

    def __call__(self, layout: BatchLayout, first: FirstPass, idx: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor,
                 weights: TermWeights, sums: Counter) -> torch.Tensor:
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
            loss = loss + weights.rl * rl_loss * self.world
            on_mask = rl_mask * policy[rl][:, None]
            sums.update({"rl_loss": rl_loss.item(), "on_policy_tokens": on_mask.sum().item(),
                         "clipped_low": (clipped.clipped_low * on_mask).sum().item(),
                         "clipped_high": (clipped.clipped_high * on_mask).sum().item()})
        if self.use_sft and demo.any():
            sft_tokens = losses.sft_token_nll(logp[demo], a.sft_token_weighting)
            sft_loss = losses.token_mean(sft_tokens, mask[demo], max_length=0, num_tokens=layout.n_demo_tokens)
            loss = loss + weights.sft * sft_loss * self.world
            sums.update({"sft_loss": sft_loss.item()})
        return loss

    def stats(self, layout: BatchLayout, sums: Counter, with_kl: bool) -> LossStats:
        """The loss terms of one iteration over the micro-batches."""
        out = LossStats()
        if self.use_rl:
            on_policy_tokens = max(sums["on_policy_tokens"], 1.0)
            out.rl = sums["rl_loss"] * self.world
            out.clip_low_frac = sums["clipped_low"] / on_policy_tokens
            out.clip_high_frac = sums["clipped_high"] / on_policy_tokens
            if with_kl:
                out.kl = sums["kl_sum"] / max(sums["rl_tokens"], 1.0)
        if self.use_sft and layout.demo.any():
            out.sft = sums["sft_loss"] * self.world
        return out


@dataclass
class StepContext:
    """What every step of a run shares: its config, models, data streams, rewards and the process group's
    collectives. The trainer builds it once."""

    config: UniAPLConfig
    models: PolicyModels
    tokenizer: object
    rewards: list[WeightedReward]
    prompts: Stream
    demos: Stream  # of Demonstration
    multiplier: Multiplier
    discriminator: Discriminator | None
    anchor: FrozenAnchor | None  # AAPA's fixed discriminator
    guard: FiniteUpdateGuard
    global_sum: Callable[[float], float]
    gather: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor], None]
    device: torch.device
    processes: int


class TrainingStep:
    """The steps of one stage: its components (`Components`) fixed, `run` once per step."""

    def __init__(self, context: StepContext, comps: Components, stage_index: int, stage_steps: int):
        cfg = context.config
        self.context, self.comps, self.stage_steps = context, comps, stage_steps
        self.demos_per_step = cfg.demos_per_step(stage_index)
        self.member = (ExpertMember({d.example.prompt_key(): d.completion_ids for d in context.demos.items}, cfg.algorithm.luffy_gamma)
                       if comps.expert_in_group else GroupMember())
        # the adversarial reward enters the advantages, so it runs with RL only
        self.discriminator = context.discriminator if comps.use_adversarial and comps.use_rl else None
        self.loss = StepLoss(cfg.algorithm, comps.use_rl, comps.use_sft, self.member,
                             self.member.max_rl_length(cfg.rollout.max_new_tokens, cfg.data.max_demo_length), context.processes)

    def run(self, state: TrainerState) -> StepOutput:
        ctx, cfg = self.context, self.context.config
        start = time.perf_counter()
        timings: dict[str, float] = {}
        weights = ctx.multiplier.weights(self.comps.lambda_mode, self.comps.use_sft, state.stage_step, self.stage_steps)
        out = StepOutput(lr=ctx.models.scheduler.get_last_lr()[0], weights=weights if self.comps.use_sft else None,
                         epsilon=cfg.algorithm.epsilon, timings=timings, processes=ctx.processes)

        rows = self.rollouts(state, timings)
        out.rollouts, out.anchor = rows.rollouts, rows.anchor
        # sharded processes must run the same passes in step, so they keep one plan that does not depend on lengths
        layout = BatchLayout.build(rows.rows, ctx.tokenizer.pad_token_id, ctx.device, cfg.rollout.temperature,
                                   cfg.training.micro_batch_size, ctx.global_sum, by_length=ctx.models.sharding is None,
                                   keep_rl_together=self.discriminator is not None and self.discriminator.needs_pooled)
        first = self.first_pass(layout, timings)
        with timed(timings, M.TIME_FIRST_PASS):
            out.adversarial = self.adversarial_scores(layout, first, state)
            advantages = self.advantages(rows.task_rewards, layout, out.adversarial, out.anchor)
        for iteration in range(cfg.algorithm.num_iterations):
            with timed(timings, M.TIME_BACKWARD):
                out.losses = self.backward(layout, first, advantages, weights, with_carried=iteration == 0)
            if iteration == 0:  # every row has been forwarded once, before any update
                out.entropy, out.c_batch = first.entropy(), first.c_batch(ctx.global_sum)
                out.engine_logp_diff = self.engine_logp_diff(rows.rows, first)
            with timed(timings, M.TIME_OPTIMIZER):
                self.optimizer_step(state, out)
        with timed(timings, M.TIME_OPTIMIZER):
            ctx.models.sync_rollout_model()
        if self.comps.use_sft:
            ctx.multiplier.dual_step(self.comps.lambda_mode, out.c_batch)
        if self.discriminator is not None:
            out.disc_accuracy, out.disc_update = self.discriminator_step(layout, first, out.adversarial)
        timings[M.TIME_STEP] = total = time.perf_counter() - start
        n_generated = sum(rows.rollouts.lengths) if rows.rollouts else 0
        out.generated_tokens_per_s = ctx.global_sum(n_generated) / total if n_generated else 0.0
        return out

    # ---- 1. rollouts: G per prompt, scored, then the step's demonstrations -------------------------

    def rollouts(self, state: TrainerState, timings: dict) -> StepRows:
        rows = self.rollout_rows(state, timings) if self.comps.use_rl else StepRows([], torch.zeros(0))
        if self.comps.use_sft or self.comps.use_adversarial:
            demos, _ = self.context.demos.take(state.demo_cursor, self.demos_per_step)
            state.demo_cursor += self.demos_per_step
            for ids, demo in zip(self.prompt_ids([d.example for d in demos]), demos):
                rows.rows.append(TrainRow(ids, demo.completion_ids, DEMO))
        return rows

    def rollout_rows(self, state: TrainerState, timings: dict) -> StepRows:
        """G rollouts per prompt, each group followed by its expert member under LUFFY, and their task rewards."""
        ctx, cfg, r, member = self.context, self.context.config, self.context.config.rollout, self.member
        with timed(timings, M.TIME_GENERATION):
            prompts, first = ctx.prompts.take(state.prompt_cursor, cfg.training.prompts_per_step)
            state.prompt_cursor += cfg.training.prompts_per_step
            prompt_ids = self.prompt_ids(prompts)
            repeated = [ids for ids in prompt_ids for _ in range(r.num_generations)]
            seeds = [sequence_seed(cfg.training.seed, state.global_step, first * r.num_generations + i) for i in range(len(repeated))]
            params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k, do_sample=True)
            completions = ctx.models.rollout_engine.generate(repeated, params, seeds, r.batch_size)

        with timed(timings, M.TIME_SCORING):
            members = member.member_ids([p.prompt_key() for p in prompts])
            rollout_examples = [e for e in prompts for _ in range(r.num_generations)]
            member_examples = [p for p in prompts for _ in range(member.size)]
            member_completions = [Completion(ids, ctx.tokenizer.decode(ids, skip_special_tokens=True), False) for ids in members]
            flat_rewards, per_function = self.score(rollout_examples + member_examples, list(completions) + member_completions)
            anchor = None
            if self.comps.use_anchor:
                anchor = ctx.anchor.scores(_texts(rollout_examples, completions), _texts(member_examples, member_completions))

        n, groups = len(completions), len(prompts)
        task_rewards = torch.cat([flat_rewards[:n].view(groups, r.num_generations), flat_rewards[n:].view(groups, member.size)], dim=1)
        rows = []
        for g, ids in enumerate(prompt_ids):
            rows += [TrainRow(ids, c.completion_ids, ROLLOUT, c.logprobs)
                     for c in completions[g * r.num_generations : (g + 1) * r.num_generations]]
            rows += [TrainRow(ids, m, EXPERT_MEMBER) for m in members[g * member.size : (g + 1) * member.size]]

        all_rewards = ctx.gather(flat_rewards[:n].to(ctx.device))
        by_function = {}
        for name, values in per_function.items():
            valid = [v for v in values[:n] if v is not None]
            if valid:
                by_function[name] = float(np.mean(valid))
        rewarded = bool(ctx.rewards)
        stats = RolloutStats(all_rewards.mean().item() if rewarded else None,
                             (all_rewards.std().item() if len(all_rewards) > 1 else 0.0) if rewarded else None, by_function,
                             [len(c.completion_ids) for c in completions], float(np.mean([c.truncated for c in completions])))
        return StepRows(rows, task_rewards.reshape(-1), stats, anchor)

    def prompt_ids(self, examples) -> list[list[int]]:
        return encode_prompts(self.context.tokenizer, [e.prompt for e in examples], self.context.config.data.max_prompt_length)

    def score(self, examples, completions: list[Completion]) -> tuple[torch.Tensor, dict]:
        columns = {key: [e.columns.get(key) for e in examples] for key in {k for e in examples for k in e.columns}}
        texts = [c.text for c in completions]
        completions_arg = [[{"role": "assistant", "content": t}] for t in texts] if examples[0].conversational else texts
        columns["completion_ids"] = [c.completion_ids for c in completions]
        totals, per_function = score(self.context.rewards, [e.prompt for e in examples], completions_arg, columns,
                                     rows=[e.where for e in examples])
        return torch.tensor(totals, dtype=torch.float32), per_function

    def engine_logp_diff(self, rows: list[TrainRow], first: FirstPass) -> tuple[float, float] | None:
        """The largest and the mean |engine log-prob - trainer log-prob| of the sampled tokens, over every process.
        Under top-k or top-p an engine may renormalize over the kept tokens (vLLM does), so only without them."""
        r = self.context.config.rollout
        sampled = [(i, row.sampling_logprobs) for i, row in enumerate(rows) if row.kind == ROLLOUT and row.sampling_logprobs]
        if r.top_k or r.top_p < 1.0 or not sampled:
            return None
        diffs = torch.cat([(first.old_logp[i, : len(lp)].cpu() - torch.tensor(lp)).abs() for i, lp in sampled])
        ctx = self.context
        largest = ctx.gather(diffs.max().reshape(1).to(ctx.device)).max().item()
        return largest, ctx.global_sum(diffs.sum().item()) / ctx.global_sum(len(diffs))

    # ---- 3. first pass: what the advantages need before any loss ----------------------------------

    def first_pass(self, layout: BatchLayout, timings: dict) -> FirstPass:
        """The reference model's log-probs, and the policy's pooled features of the RL rows where the head
        discriminator scores them. When one pass holds every RL row it runs here, with gradients, and is carried
        to the backward phase (and timed as part of it); otherwise the passes with RL rows run here once more,
        without gradients."""
        with timed(timings, M.TIME_FIRST_PASS):
            first = FirstPass(layout, self.context.models.reference_logp(layout, self.comps.use_rl))
        if self.discriminator is None or not self.discriminator.needs_pooled:
            return first
        if layout.rl_pass is not None:
            idx = layout.micro_batches[layout.rl_pass]
            with timed(timings, M.TIME_BACKWARD):
                first.carried = (layout.rl_pass, self.forward(first, idx, grad=True, sync=len(layout.micro_batches) == 1))
            return first
        with timed(timings, M.TIME_FIRST_PASS):
            for idx in layout.micro_batches:
                if layout.rl[idx].any():
                    self.forward(first, idx, grad=False)
        return first

    def forward(self, first: FirstPass, idx: torch.Tensor, grad: bool, sync: bool = False) -> TokenScores:
        """One policy pass over the rows `idx`, which records what the first pass does not know of them yet."""
        pool = self.discriminator is not None and self.discriminator.needs_pooled and first.needs(idx)
        with contextlib.nullcontext() if grad else torch.no_grad():
            scores = self.context.models.policy_pass(first.layout, idx, pool=pool, sync=sync)
        first.record(idx, scores)
        return scores

    # ---- 4. advantages: group-relative, of r + alpha_adv * r_adv ---------------------------------

    @torch.no_grad()
    def adversarial_scores(self, layout: BatchLayout, first: FirstPass, state: TrainerState) -> AdversarialScores | None:
        if self.discriminator is None:
            return None
        a, d = self.context.config.algorithm, self.discriminator
        policy_logits = d.score(layout, first.pooled, layout.on_policy)
        member_logits = d.score(layout, first.pooled, layout.expert_members)
        alpha = adversarial_weight(state.stage_step, a.alpha_adv, a.discriminator.warmup_steps, a.alpha_adv_warmup_steps)
        return AdversarialScores(policy_logits, member_logits, adversarial_reward(policy_logits, a.adv_clip).cpu(),
                                 adversarial_reward(member_logits, a.adv_clip).cpu(), alpha)

    def advantages(self, task_rewards: torch.Tensor, layout: BatchLayout, adversarial: AdversarialScores | None,
                   anchor: AnchorScores | None) -> torch.Tensor:
        """Per-row advantages of r~ = r + alpha_adv * r_adv + alpha_anchor * a (each term where the stage has it), 0 on
        demonstrations."""
        a, r = self.context.config.algorithm, self.context.config.rollout
        advantages = torch.zeros(len(layout.rl), device=self.context.device)
        if not self.comps.use_rl:
            return advantages
        terms = [(task_rewards, 1.0)] if self.comps.use_task_reward else []
        grouped = lambda scores: self.member.group_rewards(scores.policy_rewards, scores.member_rewards, r.num_generations)  # noqa: E731
        if adversarial is not None:
            terms.append((grouped(adversarial), adversarial.alpha))
        if anchor is not None:
            terms.append((grouped(anchor), anchor.weight))
        advantages[layout.rl] = combined_advantages(terms, r.num_generations + self.member.size, a.advantage,
                                                    a.normalize_rewards_separately).to(self.context.device)
        return advantages

    # ---- 5. backward: every micro-batch's share of the loss ---------------------------------------

    def backward(self, layout: BatchLayout, first: FirstPass, advantages: torch.Tensor, weights: TermWeights,
                 with_carried: bool) -> LossStats:
        """One iteration over the micro-batches, starting with the pass the first-pass phase carried. Processes
        average their gradients once per update, at the last micro-batch's backward."""
        carried = first.carried if with_carried else None
        order = list(range(len(layout.micro_batches)))
        if carried is not None:
            order.remove(carried[0])
            order.insert(0, carried[0])
        sums: Counter = Counter()
        for position, number in enumerate(order):
            idx = layout.micro_batches[number]
            if carried is not None and number == carried[0]:
                scores = carried[1]
            else:
                scores = self.forward(first, idx, grad=True, sync=position == len(order) - 1)
            self.context.backward(self.loss(layout, first, idx, scores.logp, advantages, weights, sums))
        if with_carried:
            first.carried = None  # its graph is freed
        return self.loss.stats(layout, sums, with_kl=first.ref_logp is not None)

    # ---- 6. optimizer ---------------------------------------------------------------------------

    def optimizer_step(self, state: TrainerState, out: StepOutput) -> None:
        models = self.context.models
        out.grad_norm = models.clip_gradients()
        if self.context.guard.allows_update(state.global_step + 1, out.grad_norm, out.losses.finite_check_values()):
            models.optimizer.step()
        else:
            out.skipped_updates += 1
        models.scheduler.step()
        models.optimizer.zero_grad(set_to_none=True)

    # ---- 8. discriminator -----------------------------------------------------------------------

    def discriminator_step(self, layout: BatchLayout, first: FirstPass, adversarial: AdversarialScores
                           ) -> tuple[tuple[float, float], DiscriminatorUpdate]:
        """Its accuracy before the update (expert rows: the demonstrations and LUFFY's members), then its update."""
        d = self.discriminator
        demo_logits = d.score(layout, first.pooled, layout.demo)
        acc = accuracy(torch.cat([adversarial.member_logits, demo_logits]), adversarial.policy_logits)
        return acc, d.update(d.inputs(layout, first.pooled))


def _texts(examples, completions: list[Completion]) -> tuple[list[str], list[str]]:
    """(the user's text of each prompt, each response): what AAPA's discriminator reads."""
    return [prompt_text(e.prompt) for e in examples], [c.text for c in completions]


@contextlib.contextmanager
def timed(timings: dict, name: str):
    """Add the block's wall time to timings[name]; on a GPU, after its queued work has run."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
