"""The one trainer. Every algorithm (SFT, GRPO, CHORD, LUFFY, UniAPL and its ablations) is a setting of
the objective L = L_GRPO + lambda * L_SFT + beta_kl * KL, with the adversarial reward in L_GRPO's
advantages; CHORD mixes the terms as (1 - mu) * (L_GRPO + beta_kl * KL) + mu * L_SFT. A step runs in phases
(`_step`): rows (generate, score, demonstrations) -> batch layout -> first pass -> advantages -> micro-batch
backward -> optimizer -> dual step -> discriminator. The phases' parts are in uniapl.train.step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from uniapl.algorithms import advantages as adv_lib
from uniapl.algorithms import losses
from uniapl.algorithms.adversarial import accuracy, adversarial_reward, adversarial_weight
from uniapl.algorithms.dual import dual_ascent, ema, warmup_decay
from uniapl.algorithms.presets import Components
from uniapl.train.checkpoint import (
    optimizer_state_from_files,
    optimizer_state_to_files,
    reapply_lr_schedule,
    remove_interrupted_saves,
    restore_rng_state,
    resume_checkpoint,
    rng_state,
    save_checkpoint_folder,
    saved_run,
)
from uniapl.config import UniAPLConfig
from uniapl.train.examples import Example, examples_from_records, expert_demos, load_examples
from uniapl.train import metric_names as M
from uniapl.train.discriminators import (
    Discriminator,
    DiscriminatorInputs,
    HeadDiscriminator,
    ModelDiscriminator,
    NullDiscriminator,
)
from uniapl.errors import ConfigError, DataError, UniaplError, UniaplWarning
from uniapl.io import check_output_folder, read_json, write_folder_atomically
from uniapl.train.guard import FiniteUpdateGuard
from uniapl.train.resume import check_resume_config
from uniapl.train.metrics import MetricsLogger
from uniapl.models import load_model, load_tokenizer, resolve_dtype, warn_if_bf16_is_emulated
from uniapl.rewards import WeightedReward, resolve_reward, score
from uniapl.train.rollout import Completion, SamplingParams, encode_prompts, generate, sequence_seed
from uniapl.train.sequences import TokenScores, score_tokens
from uniapl.train.sharding import (
    Sharding,
    clip_gradients,
    full_optimizer_state,
    full_state_dict,
    gathered,
    is_sharded,
    load_full_state,
    load_optimizer_state,
)
from uniapl.train.step import (
    DEMO,
    EXPERT_MEMBER,
    ROLLOUT,
    BatchLayout,
    ExpertMember,
    FirstPass,
    GroupMember,
    StepLoss,
    StepRows,
    TermWeights,
    TrainRow,
    timed,
)


@dataclass
class Demonstration:
    """An expert demonstration and its completion's token ids, ending with EOS: the one tokenization that the SFT
    term trains on, the discriminator reads and LUFFY's expert member is scored on (as the decoded ids)."""

    example: Example
    completion_ids: list[int]


def _cursor_indices(n_items: int, cursor: int, count: int, seed: int) -> list[int]:
    """Items cursor..cursor+count of an endless stream of seeded per-epoch permutations: resumable by cursor alone."""
    out = []
    for position in range(cursor, cursor + count):
        epoch, offset = divmod(position, n_items)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n_items)[offset]))
    return out


class UniAPLTrainer:
    """Trains a causal LM with one of the algorithms of `UniAPLConfig.algorithm.name`.

    Like TRL's trainers: `UniAPLTrainer(model, reward_funcs, args, train_dataset, expert_dataset,
    processing_class).train()`. Anything left out comes from the config (`args`).
    """

    def __init__(
        self,
        model=None,
        reward_funcs: Sequence[Callable | str] | None = None,
        args: UniAPLConfig | None = None,
        train_dataset=None,
        expert_dataset=None,
        processing_class=None,
    ):
        if isinstance(model, UniAPLConfig):
            raise TypeError("pass the config as UniAPLTrainer(args=config); the first argument is the model")
        self.config = args or UniAPLConfig()
        self.config.validate()
        cfg = self.config
        # bf16: fp32 master weights, passes in bf16 autocast, on GPUs and on CPUs alike (AMX runs a bf16
        # matmul's forward and backward about 5x faster than fp32 on one core). The trainer's own autocast rather
        # than accelerate's mixed precision, which is fixed per process: trainers of both dtypes can share one
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
        dtype = resolve_dtype(cfg.model.dtype)
        if self.accelerator.num_processes > 1:  # 'auto' may time bf16 on a CPU: every process takes the main one's choice
            dtype = broadcast_object_list([dtype])[0]
        self._use_dtype(dtype)
        self.output_dir = check_output_folder(cfg.training.output_dir, "training.output_dir")  # before the models load
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.update_guard = FiniteUpdateGuard(cfg.training.max_consecutive_skipped_updates)
        self._model_arg = model
        # where the policy loads from; None when `model` is a model object, which is the policy itself
        self.start_model_name = model if isinstance(model, str) else (cfg.model.name if model is None else None)
        self.tokenizer = processing_class or self._tokenizer_of_start_model()
        self.pad_id = self.tokenizer.pad_token_id
        self.ref_model = None

        self.prompts, self.demos = self._load_data(train_dataset, expert_dataset)
        self.rewards = self._load_rewards(reward_funcs)
        if cfg.runs_rl() and not self.rewards:
            raise ConfigError(f"rewards: algorithm '{cfg.algorithm.name}' runs RL and needs at least one reward function")
        world = self.accelerator.num_processes
        per_step = {"training.prompts_per_step": cfg.training.prompts_per_step, "training.demos_per_step": cfg.training.demos_per_step,
                    "algorithm.sft_stage_demos_per_step": cfg.demos_per_step(0)}
        for name, count in per_step.items():
            if count % world:
                raise UniaplError(f"{name}={count} must be divisible by the {world} processes")

        self.global_step = 0
        self.stage_index = 0
        self.stage_step = 0
        self.prompt_cursor = 0
        self.demo_cursor = 0
        self.lam = cfg.algorithm.lambda_init
        self.c_ema: float | None = None

    # ---- setup ------------------------------------------------------------------------------------

    def _use_dtype(self, dtype: str) -> None:
        self.dtype = dtype
        self.train_in_bf16 = dtype == "bf16"
        # FSDP2 when the launch config asks for it (configs/accelerate/fsdp2.yaml); else DDP, or one process.
        # Under bf16 the shards' fp32 weights are gathered in bf16
        self.sharding = Sharding.from_launch(torch.bfloat16 if self.train_in_bf16 else None)

    def _tokenizer_of_start_model(self):
        """The tokenizer of the start model: its name's, or a model object's name_or_path folder's."""
        if self.start_model_name is not None:
            return load_tokenizer(self.start_model_name)
        folder = getattr(self._model_arg, "name_or_path", "")
        if not folder or not Path(folder).is_dir():
            raise UniaplError(f"processing_class: the model object's name_or_path ({folder!r}) is not a local folder to load "
                              f"its tokenizer from; pass UniAPLTrainer(..., processing_class=tokenizer)")
        return load_tokenizer(folder)

    def _load_data(self, train_dataset, expert_dataset) -> tuple[list[Example], list[Demonstration]]:
        cfg = self.config
        if train_dataset is not None:
            prompts = examples_from_records(train_dataset, "train_dataset")
        elif cfg.data.prompts:
            prompts = load_examples(cfg.data.prompts)
        else:
            raise UniaplError("data.prompts: no training data; set it to a .jsonl file or a datasets folder")
        if expert_dataset is not None:
            expert = examples_from_records(expert_dataset, "expert_dataset")
        elif cfg.data.expert:
            expert = load_examples(cfg.data.expert)
        else:
            expert = None
        plan = [self.config.components(stage) for stage, _ in cfg.stages()]
        if not any(c.use_sft or c.use_adversarial or c.expert_in_group for c in plan):
            return prompts, []
        examples = expert_demos(prompts, expert)
        if not examples:
            raise DataError(
                f"algorithm '{cfg.algorithm.name}' needs expert demonstrations: set data.expert, or give rows of "
                f"data.prompts a 'completion'"
            )
        demos = self._demonstrations(examples)
        if any(c.expert_in_group for c in plan):
            paired = {d.example.prompt_key() for d in demos}
            prompts = [p for p in prompts if p.prompt_key() in paired]
            if not prompts:
                raise DataError("algorithm.expert_in_group needs prompts paired with a demonstration; none of data.prompts has one")
        return prompts, demos

    def _demonstrations(self, examples: list[Example]) -> list[Demonstration]:
        """Tokenize each demonstration once. Those longer than data.max_demo_length are left out: cut, they would
        teach the model to stop mid-sentence."""
        limit = self.config.data.max_demo_length
        demos = []
        for example in examples:
            ids = self.tokenizer(example.completion_text(), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            if len(ids) <= limit:
                demos.append(Demonstration(example, ids))
        left_out = len(examples) - len(demos)
        if not demos:
            raise DataError(f"data.max_demo_length={limit}: all {left_out} expert demonstrations are longer (in tokens, "
                            f"with EOS); raise it")
        if left_out and self.accelerator.is_main_process:
            warnings.warn(f"data.max_demo_length={limit}: {left_out} of {len(examples)} expert demonstrations are longer "
                          f"(in tokens, with EOS) and are left out", UniaplWarning, stacklevel=2)
        return demos

    def _load_rewards(self, reward_funcs) -> list[WeightedReward]:
        if reward_funcs is not None:
            out = []
            for fn in reward_funcs:
                if isinstance(fn, str):
                    out.append(WeightedReward(fn, resolve_reward(fn), 1.0))
                else:
                    out.append(WeightedReward(getattr(fn, "__name__", "reward"), fn, 1.0))
            return out
        return [WeightedReward(r.name.split(".")[-1].split(":")[-1], resolve_reward(r.name), r.weight) for r in self.config.rewards]

    def _build_models(self, start_from: str | None) -> None:
        """Policy (fp32 master weights, or bf16 base + LoRA), a bf16 rollout copy, and the discriminator."""
        cfg = self.config.model
        lora = cfg.lora.enabled
        # LoRA trains fp32 adapters on a frozen base, so the base may stay in bf16 where training is bf16
        load_dtype = "bf16" if (self.train_in_bf16 and lora) else "fp32"
        if start_from and not lora:
            policy = load_model(start_from, load_dtype)
        elif self.start_model_name is None:
            policy = self._model_arg if lora else self._model_arg.float()
        else:
            policy = load_model(self.start_model_name, load_dtype)
        self.discriminator = self._build_discriminator(policy)  # before LoRA adds its layers to the policy's modules
        if lora:
            from peft import LoraConfig, PeftModel, get_peft_model

            if start_from:
                policy = PeftModel.from_pretrained(policy, start_from, is_trainable=True)
            else:
                lora_config = LoraConfig(
                    r=cfg.lora.r,
                    lora_alpha=cfg.lora.alpha,
                    lora_dropout=cfg.lora.dropout,
                    target_modules=cfg.lora.target_modules,
                    task_type="CAUSAL_LM",
                )
                policy = get_peft_model(policy, lora_config)
        if cfg.gradient_checkpointing:
            policy.activation_checkpointing_enable()
            if lora:
                policy.enable_input_require_grads()
        policy.config.use_cache = False
        # a prompt's KV cache cannot be kept through activation checkpointing's recomputed layers
        self.share_prefix = self.config.training.share_prompt_prefix and not cfg.gradient_checkpointing
        self.rollout_engine = self.config.rollout.engine
        if self.rollout_engine == "auto":
            self.rollout_engine = "compiled" if self.accelerator.device.type == "cuda" else "plain"
        device = self.accelerator.device
        # under FSDP the policy stays on the host until it is sharded: fully_shard moves a layer at a time to the
        # device, and keeps only this process's shard there
        self.policy = policy if self.sharding is not None else policy.to(device)
        # a copy for generation: in bf16, which decodes about 2x faster while training keeps fp32 master weights; and
        # under FSDP a whole one, gathered from the shards once per step (`_sync_rollout_model`), not per token
        self.rollout_model = self.policy
        bf16_copy = self.dtype == "bf16" and not lora
        if bf16_copy or self.sharding is not None:
            if bf16_copy:
                warn_if_bf16_is_emulated(self.dtype)
            rollout_model = copy.deepcopy(self.policy)
            self.rollout_model = (rollout_model.to(torch.bfloat16) if bf16_copy else rollout_model).to(device)
            self.rollout_model.config.use_cache = True
            self.rollout_model.requires_grad_(False)

    def _build_discriminator(self, policy) -> Discriminator | NullDiscriminator:
        """The discriminator, when a stage uses it. A `model` one starts from discriminator.model, or else from
        the policy's start weights (a model object passed to the trainer included)."""
        if not any(self.config.components(stage).use_adversarial for stage, _ in self.config.stages()):
            return NullDiscriminator()
        d = self.config.algorithm.discriminator
        if d.kind == "head":
            discriminator = HeadDiscriminator(policy.config.get_text_config().hidden_size, d, self.accelerator.device)
        else:
            # sharded like the policy under FSDP, with its passes in fp32 as unsharded
            shard = None if self.sharding is None else dataclasses.replace(self.sharding, param_dtype=None).shard
            discriminator = ModelDiscriminator(d.model or policy, self.pad_id, d, self.accelerator.device, shard)
        if self.accelerator.num_processes > 1:
            discriminator.gather = self.accelerator.gather
            if not is_sharded(discriminator.module):  # FSDP averages a sharded one's gradients itself
                discriminator.average_gradients = lambda grad: self.accelerator.reduce(grad, reduction="mean")
        return discriminator

    def _reference_model(self, stage_index: int, comps: Components, resumed: bool):
        """pi_ref for the KL term: a frozen copy of the policy as this stage started (sharded under FSDP), or None
        without a KL term. A later stage starts from the previous stage's saved model; a resumed first stage
        reloads the start model. Taken before the policy is sharded."""
        if self.config.algorithm.beta_kl == 0 or not comps.use_rl:
            return None
        lora = self.config.model.lora.enabled
        if stage_index > 0:
            start = load_model(str(self._stage_folder(stage_index - 1)), "fp32")
        elif not resumed:
            start = copy.deepcopy(self._unwrapped())
            start = start.merge_and_unload() if lora else start
        elif lora:
            start = copy.deepcopy(self._unwrapped()).unload()  # the frozen base, without the adapters
        elif self.start_model_name is None:
            start = copy.deepcopy(self._model_arg)  # a resumed policy is loaded from the checkpoint, not into the object
        else:
            start = load_model(self.start_model_name, "fp32")
        start = start.float().eval().requires_grad_(False)
        return start.to(self.accelerator.device) if self.sharding is None else self.sharding.shard(start)

    def _raw_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.policy)

    def _build_optimizer(self, stage_steps: int) -> None:
        """AdamW and its lr schedule. The schedule counts optimizer updates: `num_iterations` of them per step."""
        t = self.config.training
        policy = self._unwrapped()
        if self.sharding is not None and not is_sharded(policy):
            self.sharding.shard(policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        # fused: one kernel over all parameters instead of a loop of small ones per tensor (on a CPU core, about 1 s
        # of a 135M-parameter model's update)
        optimizer = torch.optim.AdamW(
            params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon, weight_decay=t.weight_decay,
            fused=True,
        )
        updates_per_step = self.config.algorithm.num_iterations
        total_updates, warmup_updates = stage_steps * updates_per_step, t.warmup_steps * updates_per_step

        def factor(update: int) -> float:
            if warmup_updates and update < warmup_updates:
                return (update + 1) / warmup_updates
            progress = min((update - warmup_updates) / max(total_updates - warmup_updates, 1), 1.0)
            if t.lr_scheduler == "linear":
                return 1.0 - progress
            if t.lr_scheduler == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        if self.sharding is None:
            self.policy, self.optimizer = self.accelerator.prepare(policy, optimizer)
        else:
            self.policy, self.optimizer = policy, optimizer

    # ---- data ------------------------------------------------------------------------------------

    def _local_slice(self, items: list) -> list:
        per_rank = len(items) // self.accelerator.num_processes
        start = self.accelerator.process_index * per_rank
        return items[start : start + per_rank]

    def _next_batch(self, items: list, cursor_name: str, count: int, salt: int) -> tuple[list, int]:
        """The global batch's slice for this process, and the global index of its first item."""
        cursor = getattr(self, cursor_name)
        indices = _cursor_indices(len(items), cursor, count, self.config.training.seed * 1000 + salt)
        setattr(self, cursor_name, cursor + count)
        first = self.accelerator.process_index * (count // self.accelerator.num_processes)
        return [items[i] for i in self._local_slice(indices)], first

    def _prompt_ids(self, examples: list[Example]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, [e.prompt for e in examples], self.config.data.max_prompt_length)

    # ---- one step: rows -> batch layout -> first pass -> advantages -> micro-batch backward -> optimizer
    #      -> dual step -> discriminator ---------------------------------------------------------------

    def _step(self, comps: Components, stage_steps: int) -> dict:
        metrics: dict[str, float] = {M.TIME_GENERATION: 0.0, M.TIME_SCORING: 0.0, M.TIME_FIRST_PASS: 0.0}
        start = time.perf_counter()
        member = self._group_member(comps)
        discriminator = self.discriminator if comps.use_adversarial else NullDiscriminator()
        rows = self._rows(comps, member, metrics)
        # sharded processes must run the same passes in step, so they keep one plan that does not depend on lengths
        layout = BatchLayout.build(rows.rows, self.pad_id, self.accelerator.device, self.config.rollout.temperature,
                                   self.config.training.micro_batch_size, self._global_sum, self.sharding is None)
        with timed(metrics, M.TIME_FIRST_PASS):
            first = self._first_pass(comps, layout, discriminator)
        loss = self._step_loss(comps, member, stage_steps)
        metrics[M.LR] = self.scheduler.get_last_lr()[0]  # the rate of this step's first update
        disc_inputs = self._backward_and_update(comps, rows, layout, first, loss, member, discriminator, metrics)
        self._dual_step(comps, loss.weights, metrics)
        if comps.use_rl:
            metrics.update(discriminator.update(disc_inputs))
        total = time.perf_counter() - start
        metrics.update({
            M.TIME_TRAINING: metrics[M.TIME_FIRST_PASS] + metrics[M.TIME_BACKWARD] + metrics[M.TIME_OPTIMIZER],
            M.TIME_STEP: total,
            M.TOKENS_PER_S: self._global_sum(rows.n_generated) / total if rows.n_generated else 0.0,
            M.PROCESSES: self.accelerator.num_processes,
        })
        return metrics

    def _group_member(self, comps: Components) -> GroupMember:
        if not comps.expert_in_group:
            return GroupMember()
        return ExpertMember({d.example.prompt_key(): d.completion_ids for d in self.demos}, self.config.algorithm.luffy_gamma)

    def _rows(self, comps: Components, member: GroupMember, metrics: dict) -> StepRows:
        """Rollouts and their task rewards (RL), then the step's demonstrations (for SFT and the discriminator)."""
        rows = self._rollout_rows(member, metrics) if comps.use_rl else StepRows([], torch.zeros(0), 0)
        if comps.use_sft or comps.use_adversarial:
            demos, _ = self._next_batch(self.demos, "demo_cursor", self.config.demos_per_step(self.stage_index), salt=2)
            for ids, demo in zip(self._prompt_ids([d.example for d in demos]), demos):
                rows.rows.append(TrainRow(ids, demo.completion_ids, DEMO))
        return rows

    def _rollout_rows(self, member: GroupMember, metrics: dict) -> StepRows:
        """G rollouts per prompt, each group followed by its expert member under LUFFY, and their task rewards."""
        cfg, r = self.config, self.config.rollout
        with timed(metrics, M.TIME_GENERATION):
            prompts, first = self._next_batch(self.prompts, "prompt_cursor", cfg.training.prompts_per_step, salt=1)
            prompt_ids = self._prompt_ids(prompts)
            repeated = [ids for ids in prompt_ids for _ in range(r.num_generations)]
            seeds = [sequence_seed(cfg.training.seed, self.global_step, first * r.num_generations + i) for i in range(len(repeated))]
            params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k, do_sample=True)
            completions = generate(self.rollout_model, self.tokenizer, repeated, params, seeds, r.batch_size, engine=self.rollout_engine)

        with timed(metrics, M.TIME_SCORING):
            members = member.member_ids([p.prompt_key() for p in prompts])
            scored_examples = [e for e in prompts for _ in range(r.num_generations)] + [p for p in prompts for _ in range(member.size)]
            member_completions = [Completion(ids, self.tokenizer.decode(ids, skip_special_tokens=True), False) for ids in members]
            flat_rewards, per_function = self._score(scored_examples, list(completions) + member_completions)

        n, groups = len(completions), len(prompts)
        task_rewards = torch.cat([flat_rewards[:n].view(groups, r.num_generations), flat_rewards[n:].view(groups, member.size)], dim=1)
        rows = []
        for g, ids in enumerate(prompt_ids):
            rows += [TrainRow(ids, c.completion_ids, ROLLOUT) for c in completions[g * r.num_generations : (g + 1) * r.num_generations]]
            rows += [TrainRow(ids, m, EXPERT_MEMBER) for m in members[g * member.size : (g + 1) * member.size]]

        all_rewards = self.accelerator.gather(flat_rewards[:n].to(self.accelerator.device))
        metrics[M.REWARD_MEAN] = all_rewards.mean().item()
        metrics[M.REWARD_STD] = all_rewards.std().item() if len(all_rewards) > 1 else 0.0
        for name, values in per_function.items():
            valid = [v for v in values[:n] if v is not None]
            if valid:
                metrics[M.reward_of(name)] = float(np.mean(valid))
        lengths = [len(c.completion_ids) for c in completions]
        metrics.update({M.LENGTH_MEAN: float(np.mean(lengths)), M.LENGTH_MIN: float(min(lengths)), M.LENGTH_MAX: float(max(lengths)),
                        M.TRUNCATED_FRAC: float(np.mean([c.truncated for c in completions]))})
        return StepRows(rows, task_rewards.reshape(-1), sum(lengths))

    @torch.no_grad()
    def _first_pass(self, comps: Components, layout: BatchLayout, discriminator) -> FirstPass:
        """The no-grad passes: the reference model's log-probs, and the policy's over every row when the adversarial
        reward needs all rows' pooled features before the first RL loss, and the passes up to it do not forward them
        all. Otherwise the first iteration's own passes fill in the first pass, so no row is forwarded twice."""
        ref_logp = None
        if self.ref_model is not None and comps.use_rl:
            ref_logp = torch.zeros_like(layout.mask)
            for idx in layout.micro_batches:
                with self._autocast():  # the policy's precision: its KL to itself is 0
                    ref_logp[idx] = self._token_scores(self.ref_model, layout, idx).logp
            if is_sharded(self.ref_model):
                self.ref_model.reshard()  # no backward follows to free the weights its root gathered
        first = FirstPass(layout, ref_logp)
        if discriminator.needs_pooled and not layout.pooled_before_advantages:
            self.policy.train()
            # the demonstration-only passes ahead of the advantages record their own rows in time
            for idx in layout.micro_batches[layout.advantages_pass:]:
                with self._autocast():
                    first.record(idx, self._token_scores(self.policy, layout, idx, pool=True))
        return first

    def _autocast(self):
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16, enabled=self.train_in_bf16)

    def _token_scores(self, model, layout: BatchLayout, idx: torch.Tensor, pool: bool = False) -> TokenScores:
        """One pass of `model` over the rows `idx`."""
        return score_tokens(model, layout.batch.select(idx), layout.temperatures[idx], pool=pool, share_prefix=self.share_prefix)

    def _step_loss(self, comps: Components, member: GroupMember, stage_steps: int) -> StepLoss:
        r, d = self.config.rollout, self.config.data
        return StepLoss(self.config.algorithm, comps.use_rl, comps.use_sft, member, member.max_rl_length(r.max_new_tokens, d.max_demo_length),
                        self._term_weights(comps, stage_steps), self.accelerator.num_processes)

    def _term_weights(self, comps: Components, stage_steps: int) -> TermWeights:
        """L_RL + lambda * L_SFT; CHORD's schedule mixes the two terms instead: (1 - mu) * L_RL + mu * L_SFT.
        L_RL is the GRPO term with its KL penalty."""
        a = self.config.algorithm
        if not comps.use_sft:
            return TermWeights(rl=1.0, sft=0.0)
        if comps.lambda_mode == "learned":
            return TermWeights(rl=1.0, sft=self.lam)
        if comps.lambda_mode == "schedule":
            mu = warmup_decay(self.stage_step, a.schedule_peak, a.schedule_final, a.schedule_warmup_steps, stage_steps, a.schedule_shape)
            return TermWeights(rl=1.0 - mu, sft=mu)
        return TermWeights(rl=1.0, sft=a.lambda_fixed)

    def _backward_and_update(self, comps: Components, rows: StepRows, layout: BatchLayout, first: FirstPass, loss: StepLoss,
                             member: GroupMember, discriminator, metrics: dict) -> DiscriminatorInputs | None:
        """`num_iterations` optimizer updates on the batch, each over all micro-batches. The advantages come once the
        first pass knows what they need: at the first micro-batch with RL rows, whose own pass may be the one that
        tells (the demonstration-only passes before it have no RL loss)."""
        advantages, disc_inputs = None, None
        metrics[M.TIME_BACKWARD] = metrics[M.TIME_OPTIMIZER] = 0.0
        for iteration in range(self.config.algorithm.num_iterations):
            sums: Counter = Counter()
            with timed(metrics, M.TIME_BACKWARD):
                for number, idx in enumerate(layout.micro_batches):
                    # processes average their gradients once per update, at the last micro-batch's backward
                    logp = self._policy_pass(layout, first, idx, pool=discriminator.needs_pooled,
                                             sync=number == len(layout.micro_batches) - 1)
                    if advantages is None and number >= layout.advantages_pass:
                        disc_inputs = discriminator.inputs(layout, first.pooled)
                        advantages = self._advantages(comps, rows, layout, member, discriminator, disc_inputs, metrics)
                    self.accelerator.backward(loss(layout, first, idx, logp, advantages, sums))
            if iteration == 0:
                metrics.update(first.metrics(self._global_sum))
            metrics.update(loss.metrics(layout, sums, with_kl=first.ref_logp is not None))
            with timed(metrics, M.TIME_OPTIMIZER):
                self._optimizer_step(metrics)
        with timed(metrics, M.TIME_OPTIMIZER):
            self._sync_rollout_model()
        return disc_inputs

    def _policy_pass(self, layout: BatchLayout, first: FirstPass, idx: torch.Tensor, pool: bool, sync: bool) -> torch.Tensor:
        """One micro-batch's forward with gradients: its token log-probs. The first iteration's passes record
        what the first pass has not."""
        self.policy.train()
        # under FSDP each micro-batch's gradients are reduce-scattered: held unsharded until the last one, they would
        # cost a whole model's gradients on every process
        unsynced = sync or self.sharding is not None
        with self._autocast(), contextlib.nullcontext() if unsynced else self.accelerator.no_sync(self.policy):
            scores = self._token_scores(self.policy, layout, idx, pool=pool and not first.complete)
        first.record(idx, scores)
        return scores.logp

    def _advantages(self, comps: Components, rows: StepRows, layout: BatchLayout, member: GroupMember, discriminator,
                    disc_inputs: DiscriminatorInputs | None, metrics: dict) -> torch.Tensor:
        """Per-row advantages, 0 on demonstrations: group-relative advantages of r + alpha_adv * r_adv."""
        a, r, device = self.config.algorithm, self.config.rollout, self.accelerator.device
        advantages = torch.zeros(len(layout.rl), device=device)
        if not comps.use_rl:
            return advantages
        adv_rewards, alpha = torch.zeros_like(rows.task_rewards), 0.0
        if disc_inputs is not None:
            expert_logits, policy_logits = discriminator.logits(disc_inputs.expert), discriminator.logits(disc_inputs.policy)
            metrics[M.DISC_ACC_EXPERT], metrics[M.DISC_ACC_POLICY] = accuracy(expert_logits, policy_logits)
            rollout_adv = adversarial_reward(policy_logits, a.adv_clip).cpu()
            metrics[M.ADV_REWARD_MEAN] = rollout_adv.mean().item()
            adv_rewards = member.adversarial_rewards(rollout_adv, adversarial_reward(expert_logits, a.adv_clip).cpu(), r.num_generations)
            alpha = adversarial_weight(self.stage_step, a.alpha_adv, a.discriminator.warmup_steps, a.alpha_adv_warmup_steps)
            metrics[M.ADV_ALPHA] = alpha
        method = "grpo" if a.advantage == "grpo" else "dr_grpo"
        advantages[layout.rl] = adv_lib.combined_advantages(rows.task_rewards, adv_rewards, alpha, r.num_generations + member.size,
                                                            method, a.normalize_rewards_separately).to(device)
        return advantages

    def _optimizer_step(self, metrics: dict) -> None:
        if self.accelerator.sync_gradients:
            metrics[M.GRAD_NORM] = clip_gradients(list(self.policy.parameters()), self.config.training.max_grad_norm)
        losses_now = {name: metrics[name] for name in (M.LOSS_RL, M.LOSS_SFT) if name in metrics}
        if self.update_guard.allows_update(self.global_step + 1, metrics.get(M.GRAD_NORM, 0.0), losses_now, metrics):
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _dual_step(self, comps: Components, weights: TermWeights, metrics: dict) -> None:
        """lambda's dual ascent on the step's detached constraint value C_batch (learned lambda)."""
        if not comps.use_sft:
            return
        a = self.config.algorithm
        metrics[M.LAMBDA], metrics[M.EPSILON] = weights.sft, a.epsilon
        if comps.lambda_mode == "learned" and math.isfinite(metrics[M.C_BATCH]):  # else lambda keeps its value
            self.c_ema = ema(self.c_ema, metrics[M.C_BATCH], a.c_batch_ema)
            self.lam = dual_ascent(self.lam, self.c_ema, a.epsilon, a.eta_lambda, a.lambda_max)

    def _global_sum(self, value: float) -> float:
        tensor = torch.tensor([float(value)], device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").item()

    def _score(self, examples: list[Example], completions: list[Completion]) -> tuple[torch.Tensor, dict]:
        columns = {key: [e.columns.get(key) for e in examples] for key in {k for e in examples for k in e.columns}}
        conversational = examples[0].conversational
        prompts = [e.prompt for e in examples]
        texts = [c.text for c in completions]
        completions_arg = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
        columns["completion_ids"] = [c.completion_ids for c in completions]
        totals, per_function = score(self.rewards, prompts, completions_arg, columns, rows=[e.where for e in examples])
        return torch.tensor(totals, dtype=torch.float32), per_function

    @torch.no_grad()
    def _sync_rollout_model(self) -> None:
        """The rollout copy takes the updated weights, gathered one tensor at a time under FSDP."""
        policy = self._unwrapped()
        if self.rollout_model is policy:
            return
        for target, source in zip(self.rollout_model.parameters(), policy.parameters()):
            if source.requires_grad:  # frozen ones (a LoRA base) never change
                target.copy_(gathered(source))

    # ---- checkpoints -------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "global_step": self.global_step,
            "stage_index": self.stage_index,
            "stage_step": self.stage_step,
            "prompt_cursor": self.prompt_cursor,
            "demo_cursor": self.demo_cursor,
            "lambda": self.lam,
            "c_ema": self.c_ema,
            "scheduler": self.scheduler.state_dict(),
            "dtype": self.dtype,
        }

    def save_checkpoint(self) -> None:
        """A checkpoint of full tensors, gathered from the shards under FSDP: the same files whatever the layout,
        so a run may resume with another number of processes, or under DDP (docs/distributed.md)."""
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process
        model_state = full_state_dict(self._unwrapped(), keep=main)
        optimizer_state = full_optimizer_state(self._raw_optimizer(), keep=main)
        discriminator = self.discriminator.module
        if discriminator is not None:
            discriminator_state = full_state_dict(discriminator, keep=main)
            discriminator_optimizer_state = full_optimizer_state(self.discriminator.optimizer, keep=main)
        if main:
            from safetensors.torch import save_file

            def fill(folder: Path) -> None:
                self._unwrapped().save_pretrained(folder / "model", state_dict=model_state)
                self.tokenizer.save_pretrained(folder / "model")
                optimizer_state_to_files(optimizer_state, folder, "optimizer")
                tensors, meta = rng_state()
                save_file(tensors, str(folder / "rng.safetensors"))
                if discriminator is not None:
                    save_file({k: v.contiguous() for k, v in discriminator_state.items()}, str(folder / "discriminator.safetensors"))
                    optimizer_state_to_files(discriminator_optimizer_state, folder, "discriminator_optimizer")
                (folder / "trainer_state.json").write_text(json.dumps({**self._state(), "rng": meta}, indent=1))

            save_checkpoint_folder(self.checkpoint_dir, self.global_step, fill, self.config, self.config.training.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _restore(self, folder: Path) -> None:
        from safetensors.torch import load_file

        state = read_json(folder / "trainer_state.json")
        load_optimizer_state(self._raw_optimizer(), optimizer_state_from_files(folder, "optimizer"))
        self.scheduler.load_state_dict(state["scheduler"])
        reapply_lr_schedule(self.scheduler)
        for key in ("global_step", "stage_index", "stage_step", "prompt_cursor", "demo_cursor"):
            setattr(self, key, state[key])
        self.lam, self.c_ema = state["lambda"], state["c_ema"]
        if self.discriminator.module is not None:
            load_full_state(self.discriminator.module, load_file(str(folder / "discriminator.safetensors")))
            load_optimizer_state(self.discriminator.optimizer, optimizer_state_from_files(folder, "discriminator_optimizer"))
        restore_rng_state(load_file(str(folder / "rng.safetensors")), state["rng"])

    # ---- the loop ----------------------------------------------------------------------------------

    def train(self, resume: bool = False) -> Path:
        """Run every stage to the end; returns the folder of the final model (`output_dir/final`)."""
        cfg = self.config
        existing = saved_run(self.output_dir)
        if existing and not resume and not cfg.training.overwrite_output_dir:
            raise UniaplError(f"training.output_dir '{self.output_dir}' already holds a run ({', '.join(existing)}); continue it with "
                              f"--resume, choose another output_dir, or set training.overwrite_output_dir=true to start it over")
        if self.accelerator.is_main_process:
            remove_interrupted_saves(self.output_dir)
        resume_from = resume_checkpoint(self.checkpoint_dir) if resume else None
        if resume and resume_from is None and self.accelerator.is_main_process:
            print(f"uniapl: no checkpoint in {self.checkpoint_dir}; starting from step 0")
        state = read_json(resume_from / "trainer_state.json") if resume_from else None
        if state is not None:
            changed = check_resume_config(resume_from, cfg, state["global_step"])
            if changed and self.accelerator.is_main_process:
                print(f"uniapl: resuming {resume_from.name} with these changes: {'; '.join(changed)}")
            trained_in = state.get("dtype", self.dtype)  # absent from checkpoints saved before it was recorded
            if cfg.model.dtype == "auto" and trained_in != self.dtype:  # a run keeps its precision across machines
                if self.accelerator.is_main_process:
                    print(f"uniapl: resuming {resume_from.name} in {trained_in}, the dtype it was trained in "
                          f"(model.dtype auto would pick {self.dtype} on this hardware)")
                self._use_dtype(trained_in)
        set_seed(cfg.training.seed)  # the discriminator's initialization, dropout and any other global RNG use
        self._build_models(str(resume_from / "model") if resume_from else None)
        stages = cfg.stages()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            (self.output_dir / "config.yaml").write_text(cfg.to_yaml())
        logger = MetricsLogger(self.output_dir, cfg.training.tensorboard, enabled=self.accelerator.is_main_process,
                               resume_step=state["global_step"] if state else 0)
        progress = logger.progress(total=cfg.training.max_steps, initial=state["global_step"] if state else 0,
                                   enabled=cfg.training.progress and self.accelerator.is_main_process)
        first_stage = state["stage_index"] if state else 0
        try:
            for index in range(first_stage, len(stages)):
                stage, stage_steps = stages[index]
                comps = cfg.components(stage)
                resumed = resume_from is not None and index == first_stage
                self.ref_model = self._reference_model(index, comps, resumed)
                self._build_optimizer(stage_steps)
                if resumed:
                    self._restore(resume_from)
                else:
                    self.stage_index, self.stage_step = index, 0
                while self.stage_step < stage_steps:
                    metrics = self._step(comps, stage_steps)
                    self.global_step += 1
                    self.stage_step += 1
                    logger.log(self.global_step, {M.STAGE: index, **metrics})
                    progress.update(metrics)
                    if cfg.training.save_steps and self.global_step % cfg.training.save_steps == 0:
                        self.save_checkpoint()
                if len(stages) > 1 and index < len(stages) - 1:
                    self._save_model(self._stage_folder(index))
        finally:
            progress.close()
            logger.close()
        final = self.output_dir / "final"
        self._save_model(final)
        return final

    def _stage_folder(self, stage_index: int) -> Path:
        """Where a stage's final model is saved: the next stage's start, and its reference model."""
        return self.output_dir / "stages" / self.config.stages()[stage_index][0]

    def _save_model(self, folder: Path) -> None:
        """A plain HF folder that from_pretrained loads as it is: full tensors, gathered from the shards under FSDP.
        LoRA adapters are merged into a copy of the rollout model, which is then the whole policy (itself, or its
        gathered copy under FSDP)."""
        self.accelerator.wait_for_everyone()
        main, lora = self.accelerator.is_main_process, self.config.model.lora.enabled
        state = None if lora else full_state_dict(self._unwrapped(), keep=main)
        if main:
            model = copy.deepcopy(self.rollout_model).merge_and_unload() if lora else self._unwrapped()

            def fill(staging: Path) -> None:
                model.save_pretrained(staging, state_dict=state)
                self.tokenizer.save_pretrained(staging)

            write_folder_atomically(folder, fill)
        self.accelerator.wait_for_everyone()

