"""The one trainer. Every algorithm (SFT, GRPO, CHORD, LUFFY, UniAPL and its ablations) is a setting of the
objective L = L_GRPO + lambda * L_SFT + beta_kl * KL, with the adversarial reward in L_GRPO's advantages; CHORD
mixes the terms as (1 - mu) * (L_GRPO + beta_kl * KL) + mu * L_SFT.

This module is the loop and the wiring: the stages, checkpoints and resuming. A step's phases are in
uniapl.train.step, the models in uniapl.train.policy, the data streams in uniapl.train.data
(docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from uniapl import metric_names as M
from uniapl.algorithms.dual import Multiplier
from uniapl.config import UniAPLConfig
from uniapl.errors import ConfigError, UniaplError
from uniapl.generation import VLLMEngine
from uniapl.io import check_output_folder
from uniapl.models import load_tokenizer, resolve_dtype
from uniapl.rewards import WeightedReward, resolve_reward
from uniapl.train.checkpoint import (
    remove_interrupted_saves,
    restore_rng_state,
    resume_checkpoint,
    rng_state,
    save_checkpoint_folder,
    saved_run,
)
from uniapl.train.data import Stream, load_training_data
from uniapl.train.discriminators import Discriminator, build_discriminator
from uniapl.train.guard import FiniteUpdateGuard
from uniapl.train.metrics import MetricsLogger
from uniapl.train.anchor import FrozenAnchor
from uniapl.train.policy import PolicyModels
from uniapl.train.resume import check_resume_config
from uniapl.train.state import TrainerState
from uniapl.train.step import StepContext, TrainingStep


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
        # bf16: fp32 master weights, passes in bf16 autocast, on GPUs and on CPUs alike (AMX runs a bf16 matmul's
        # forward and backward about 5x faster than fp32 on one core). The trainer's own autocast rather than
        # accelerate's mixed precision, which is fixed per process: trainers of both dtypes can share one
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
        dtype = resolve_dtype(cfg.model.dtype)
        if self.accelerator.num_processes > 1:  # 'auto' may time bf16 on a CPU: every process takes the main one's choice
            dtype = broadcast_object_list([dtype])[0]
        self.output_dir = check_output_folder(cfg.training.output_dir, "training.output_dir")  # before the models load
        self.checkpoint_dir = self.output_dir / "checkpoints"
        start = model if model is not None else cfg.model.name  # a name or folder, or the policy itself
        self.tokenizer = processing_class or _tokenizer_of(start)
        self.models = PolicyModels(cfg, self.accelerator, dtype, start, self.tokenizer)
        self.discriminator: Discriminator | None = None

        self.prompts, self.demos = load_training_data(cfg, self.tokenizer, train_dataset, expert_dataset,
                                                      warn=self.accelerator.is_main_process)
        self.rewards = self._load_rewards(reward_funcs)
        if cfg.needs_task_reward() and not self.rewards:
            raise ConfigError(f"rewards: algorithm '{cfg.algorithm.name}' runs RL on the task reward and needs at least one "
                              f"reward function")
        # AAPA's fixed discriminator: loaded (and checked against the config) before any training
        self.anchor = FrozenAnchor(cfg.algorithm.anchor, start if isinstance(start, str) else None,
                                   self.accelerator.device) if cfg.uses_anchor() else None
        world = self.accelerator.num_processes
        per_step = {"training.prompts_per_step": cfg.training.prompts_per_step, "training.demos_per_step": cfg.training.demos_per_step,
                    "algorithm.sft_stage_demos_per_step": cfg.demos_per_step(0)}
        for name, count in per_step.items():
            if count % world:
                raise UniaplError(f"{name}={count} must be divisible by the {world} processes")
        self.state = TrainerState()
        self.multiplier = Multiplier(cfg.algorithm)
        self.guard = FiniteUpdateGuard(cfg.training.max_consecutive_skipped_updates)

    def _load_rewards(self, reward_funcs) -> list[WeightedReward]:
        if reward_funcs is None:
            return [WeightedReward(r.name.split(".")[-1].split(":")[-1], resolve_reward(r.name), r.weight) for r in self.config.rewards]
        return [WeightedReward(fn, resolve_reward(fn), 1.0) if isinstance(fn, str) else WeightedReward(getattr(fn, "__name__", "reward"), fn, 1.0)
                for fn in reward_funcs]

    def _build_discriminator(self, policy) -> None:
        """The co-trained discriminator, when a stage uses it; built from the policy before LoRA adds its layers."""
        if any(self.config.components(stage).use_adversarial for stage, _ in self.config.stages()):
            self.discriminator = build_discriminator(self.config.algorithm.discriminator, policy, self.tokenizer.pad_token_id,
                                                     self.accelerator, self.models.sharding)

    def _step_context(self) -> StepContext:
        seed, process, processes = self.config.training.seed, self.accelerator.process_index, self.accelerator.num_processes
        return StepContext(
            config=self.config, models=self.models, tokenizer=self.tokenizer, rewards=self.rewards,
            prompts=Stream(self.prompts, seed * 1000 + 1, process, processes),
            demos=Stream(self.demos, seed * 1000 + 2, process, processes),
            multiplier=self.multiplier, discriminator=self.discriminator, anchor=self.anchor, guard=self.guard, global_sum=self._global_sum,
            gather=self.accelerator.gather, backward=self.accelerator.backward, device=self.accelerator.device, processes=processes,
        )

    def _global_sum(self, value: float) -> float:
        tensor = torch.tensor([float(value)], device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").item()

    # ---- checkpoints -------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """A checkpoint of full tensors, gathered from the shards under FSDP: the same files whatever the layout,
        so a run may resume with another number of processes, or under DDP (docs/distributed.md)."""
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process
        writers = [self.models.checkpoint_writer()]
        if self.discriminator is not None:
            writers.append(self.discriminator.checkpoint_writer(keep=main))
        if main:
            from safetensors.torch import save_file

            def fill(folder: Path) -> None:
                for write in writers:
                    write(folder)
                tensors, meta = rng_state()
                save_file(tensors, str(folder / "rng.safetensors"))
                dataclasses.replace(self.state, multiplier=self.multiplier.state_dict(), scheduler=self.models.scheduler.state_dict(),
                                    dtype=self.models.dtype, anchor=self.anchor.identity() if self.anchor else None,
                                    engine=self.models.rollout_engine.name, rng=meta).save(folder)

            save_checkpoint_folder(self.checkpoint_dir, self.state.global_step, fill, self.config, self.config.training.save_total_limit)
        self.accelerator.wait_for_everyone()

    def _restore(self, folder: Path, saved: TrainerState) -> None:
        """Everything a checkpoint holds but the policy's weights, which `PolicyModels.build` loaded."""
        from safetensors.torch import load_file

        self.models.restore(folder, saved.scheduler)
        self.state = saved
        self.multiplier.load_state_dict(saved.multiplier)
        if self.discriminator is not None:
            self.discriminator.restore(folder)
        restore_rng_state(load_file(str(folder / "rng.safetensors")), saved.rng)

    def _resume_point(self, resume: bool) -> tuple[Path | None, TrainerState | None]:
        """The checkpoint to resume from and its state, checked against this config; None for a fresh start."""
        resume_from = resume_checkpoint(self.checkpoint_dir) if resume else None
        main = self.accelerator.is_main_process
        if resume and resume_from is None and main:
            print(f"uniapl: no checkpoint in {self.checkpoint_dir}; starting from step 0")
        if resume_from is None:
            return None, None
        saved = TrainerState.load(resume_from)
        changed = check_resume_config(resume_from, self.config, saved.global_step)
        if self.anchor is not None:
            self.anchor.check_resumed(saved.anchor)
        if changed and main:
            print(f"uniapl: resuming {resume_from.name} with these changes: {'; '.join(changed)}")
        trained_in = saved.dtype or self.models.dtype
        if self.config.model.dtype == "auto" and trained_in != self.models.dtype:  # a run keeps its precision across machines
            if main:
                print(f"uniapl: resuming {resume_from.name} in {trained_in}, the dtype it was trained in "
                      f"(model.dtype auto would pick {self.models.dtype} on this hardware)")
            self.models.use_dtype(trained_in)
        return resume_from, saved

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
        resume_from, saved = self._resume_point(resume)
        set_seed(cfg.training.seed)  # the discriminator's initialization, dropout and any other global RNG use
        self.models.build(resume_from / "model" if resume_from else None, before_adapters=self._build_discriminator)
        if saved and saved.engine and (saved.engine == VLLMEngine.name) != (self.models.rollout_engine.name == VLLMEngine.name):
            raise ConfigError(f"--resume: {resume_from} sampled its rollouts with the {saved.engine} engine and this run would "
                              f"with {self.models.rollout_engine.name}, whose tokens differ; resume with rollout.engine={saved.engine}")
        context = self._step_context()
        stages = cfg.stages()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            (self.output_dir / "config.yaml").write_text(cfg.to_yaml())
        start_step = saved.global_step if saved else 0
        logger = MetricsLogger(self.output_dir, cfg.training.tensorboard, enabled=self.accelerator.is_main_process, resume_step=start_step)
        progress = logger.progress(total=cfg.training.max_steps, initial=start_step,
                                   enabled=cfg.training.progress and self.accelerator.is_main_process)
        first_stage = saved.stage_index if saved else 0
        try:
            for index in range(first_stage, len(stages)):
                stage, stage_steps = stages[index]
                comps = cfg.components(stage)
                resumed = saved is not None and index == first_stage
                self.models.build_reference(index, comps.use_rl, resumed, self._stage_folder(index - 1) if index else None)
                self.models.build_optimizer(stage_steps)
                if resumed:
                    self._restore(resume_from, saved)
                else:
                    self.state.stage_index, self.state.stage_step = index, 0
                step = TrainingStep(context, comps, index, stage_steps)
                while self.state.stage_step < stage_steps:
                    metrics = step.run(self.state).metrics()
                    self.state.global_step += 1
                    self.state.stage_step += 1
                    logger.log(self.state.global_step, {M.STAGE: index, **metrics})
                    progress.update(metrics)
                    if cfg.training.save_steps and self.state.global_step % cfg.training.save_steps == 0:
                        self.save_checkpoint()
                if index < len(stages) - 1:
                    self.models.save_model(self._stage_folder(index))
        finally:
            progress.close()
            logger.close()
        final = self.output_dir / "final"
        self.models.save_model(final)
        return final

    def _stage_folder(self, stage_index: int) -> Path:
        """Where a stage's final model is saved: the next stage's start, and its reference model."""
        return self.output_dir / "stages" / self.config.stages()[stage_index][0]


def _tokenizer_of(start):
    """The tokenizer of the start model: its name's, or a model object's name_or_path folder's."""
    if isinstance(start, str):
        return load_tokenizer(start)
    folder = getattr(start, "name_or_path", "")
    if not folder or not Path(folder).is_dir():
        raise UniaplError(f"processing_class: the model object's name_or_path ({folder!r}) is not a local folder to load "
                          f"its tokenizer from; pass UniAPLTrainer(..., processing_class=tokenizer)")
    return load_tokenizer(folder)
