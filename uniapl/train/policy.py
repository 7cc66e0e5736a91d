"""The policy and the models made from it: its reference for the KL term, its rollout copy and engine, its
optimizer and lr schedule, its passes and its saves. Whether the policy trains LoRA adapters and whether it
is sharded with FSDP2 is decided here, once; the rest of training asks this object.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Callable, Iterator

import torch

from uniapl.config import UniAPLConfig
from uniapl.generation import ENGINES, RolloutEngine, VLLMEngine, resolve_engine_name
from uniapl.io import write_folder_atomically
from uniapl.models import load_model, warn_if_bf16_is_emulated
from uniapl.train.batch import BatchLayout
from uniapl.train.checkpoint import optimizer_state_from_files, optimizer_state_to_files, reapply_lr_schedule
from uniapl.train.sequences import TokenScores, score_tokens
from uniapl.train.sharding import (
    Sharding,
    clip_gradients,
    full_optimizer_state,
    full_state_dict,
    gathered,
    is_sharded,
    load_optimizer_state,
)


class PolicyModels:
    """`start` is where the policy comes from: a name or folder, or the model object passed to the trainer (which
    then is the policy)."""

    def __init__(self, config: UniAPLConfig, accelerator, dtype: str, start, tokenizer):
        self.config, self.accelerator, self.start, self.tokenizer = config, accelerator, start, tokenizer
        self.lora = config.model.lora.enabled
        self.use_dtype(dtype)
        self.policy = self.rollout_model = self.ref_model = self.optimizer = self.scheduler = None
        self.rollout_engine: RolloutEngine | None = None

    def use_dtype(self, dtype: str) -> None:
        self.dtype = dtype
        self.train_in_bf16 = dtype == "bf16"
        # FSDP2 when the launch config asks for it (configs/accelerate/fsdp2.yaml); else DDP, or one process. Under bf16
        # the shards' fp32 weights are gathered in bf16
        self.sharding = Sharding.from_launch(torch.bfloat16 if self.train_in_bf16 else None)

    @property
    def start_is_object(self) -> bool:
        return not isinstance(self.start, str)

    # ---- building ---------------------------------------------------------------------------------

    def build(self, resume_from: Path | None, before_adapters: Callable[[torch.nn.Module], None]) -> None:
        """The policy (fp32 master weights, or a bf16 base under LoRA) and its rollout copy and engine.
        `before_adapters` sees the policy before LoRA adds its layers (the discriminator copies its body)."""
        cfg = self.config.model
        # LoRA trains fp32 adapters on a frozen base, so the base may stay in bf16 where training is bf16
        load_dtype = "bf16" if (self.train_in_bf16 and self.lora) else "fp32"
        if resume_from and not self.lora:
            policy = load_model(str(resume_from), load_dtype)
        elif self.start_is_object:
            policy = self.start if self.lora else self.start.float()
        else:
            policy = load_model(self.start, load_dtype)
        before_adapters(policy)
        if self.lora:
            policy = self._with_adapters(policy, resume_from)
        if cfg.gradient_checkpointing:
            policy.activation_checkpointing_enable()
            if self.lora:
                policy.enable_input_require_grads()
        policy.config.use_cache = False
        # a prompt's KV cache cannot be kept through activation checkpointing's recomputed layers
        self.share_prefix = self.config.training.share_prompt_prefix and not cfg.gradient_checkpointing
        device = self.accelerator.device
        # under FSDP the policy stays on the host until it is sharded: fully_shard moves a layer at a time to the
        # device, and keeps only this process's shard there
        self.policy = policy if self.sharding is not None else policy.to(device)
        # `auto` weighs vLLM only for a run that generates: it costs its build and a weight reload per step
        engine = resolve_engine_name(self.config.rollout.engine, device, policy.config if self.config.runs_rl() else None)
        self.rollout_model = self._rollout_copy(device, decodes_itself=engine != VLLMEngine.name)
        self.rollout_engine = self._rollout_engine(engine)

    def _rollout_engine(self, name: str) -> RolloutEngine:
        if name != VLLMEngine.name:
            return ENGINES[name](self.rollout_model, self.tokenizer)
        # vLLM decodes in the training precision's decode dtype: bf16 where training is bf16, as the rollout copy would
        return VLLMEngine(self.rollout_model, self.tokenizer, dtype=torch.bfloat16 if self.train_in_bf16 else torch.float32,
                          kv_cache_gb=self.config.rollout.vllm_kv_cache_gb, sleep_between_calls=True,
                          weights=self.rollout_weights())

    def _with_adapters(self, policy, resume_from: Path | None):
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume_from:
            return PeftModel.from_pretrained(policy, str(resume_from), is_trainable=True)
        lora = self.config.model.lora
        return get_peft_model(policy, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, task_type="CAUSAL_LM"))

    def _rollout_copy(self, device, decodes_itself: bool):
        """A copy for generation: in bf16, which decodes about 2x faster while training keeps fp32 master weights;
        and under FSDP a whole one, gathered from the shards once per step (`sync_rollout_model`), not per token.
        Otherwise the policy itself. An engine with weights of its own (vLLM: not `decodes_itself`) needs neither;
        under LoRA and FSDP the whole copy stays, as what the saves merge the adapters into."""
        bf16_copy = self.dtype == "bf16" and not self.lora and decodes_itself
        whole_copy = self.sharding is not None and (decodes_itself or self.lora)
        if not bf16_copy and not whole_copy:
            return self.policy
        if bf16_copy:
            warn_if_bf16_is_emulated(self.dtype)
        rollout_model = copy.deepcopy(self.policy)
        rollout_model = (rollout_model.to(torch.bfloat16) if bf16_copy else rollout_model).to(device)
        rollout_model.config.use_cache = True
        return rollout_model.requires_grad_(False)

    def build_reference(self, stage_index: int, use_rl: bool, resumed: bool, previous_stage: Path | None) -> None:
        """pi_ref for the KL term: a frozen copy of the policy as this stage started (sharded under FSDP), or None
        without a KL term. A later stage starts from the previous stage's saved model. Taken before the policy is
        sharded."""
        self.ref_model = None
        if self.config.algorithm.beta_kl == 0 or not use_rl:
            return
        if stage_index > 0:
            start = load_model(str(previous_stage), "fp32")
        elif self.lora:
            start = copy.deepcopy(self.unwrapped()).unload()  # the frozen base: the adapters start as a no-op
        elif not resumed:
            start = copy.deepcopy(self.unwrapped())
        elif self.start_is_object:
            start = copy.deepcopy(self.start)  # a resumed policy is loaded from the checkpoint, not into the object
        else:
            start = load_model(self.start, "fp32")
        start = start.float().eval().requires_grad_(False)
        self.ref_model = start.to(self.accelerator.device) if self.sharding is None else self.sharding.shard(start)

    def build_optimizer(self, stage_steps: int) -> None:
        """AdamW and its lr schedule, which counts optimizer updates: `num_iterations` of them per step."""
        t = self.config.training
        policy = self.unwrapped()
        if self.sharding is not None and not is_sharded(policy):
            self.sharding.shard(policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        # fused: one kernel over all parameters instead of a loop of small ones per tensor (on a CPU core, about 1 s
        # of a 135M-parameter model's update)
        optimizer = torch.optim.AdamW(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon,
                                      weight_decay=t.weight_decay, fused=True)
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

    def unwrapped(self):
        return self.accelerator.unwrap_model(self.policy)

    def raw_optimizer(self) -> torch.optim.Optimizer:
        return getattr(self.optimizer, "optimizer", self.optimizer)

    # ---- passes -----------------------------------------------------------------------------------

    def autocast(self):
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16, enabled=self.train_in_bf16)

    def scores(self, model, layout: BatchLayout, idx: torch.Tensor, pool: bool = False) -> TokenScores:
        """One pass of `model` over the rows `idx`, in the training precision."""
        with self.autocast():
            return score_tokens(model, layout.batch.select(idx), layout.temperatures[idx], pool=pool, share_prefix=self.share_prefix)

    def policy_pass(self, layout: BatchLayout, idx: torch.Tensor, pool: bool, sync: bool) -> TokenScores:
        """The policy's pass over the rows `idx`; with gradients on, the processes average them at the backward of a
        pass made with `sync`. Under FSDP every micro-batch's gradients are reduce-scattered: held unsharded until
        the last one, they would cost a whole model's gradients on every process."""
        self.policy.train()
        unsynced = sync or self.sharding is not None
        with contextlib.nullcontext() if unsynced else self.accelerator.no_sync(self.policy):
            return self.scores(self.policy, layout, idx, pool=pool)

    @torch.no_grad()
    def reference_logp(self, layout: BatchLayout, use_rl: bool) -> torch.Tensor | None:
        """The reference model's log-probs of every row ([rows, C]), in the policy's precision (its KL to itself is 0)."""
        if self.ref_model is None or not use_rl:
            return None
        ref_logp = torch.zeros_like(layout.mask)
        for idx in layout.micro_batches:
            ref_logp[idx] = self.scores(self.ref_model, layout, idx).logp
        if is_sharded(self.ref_model):
            self.ref_model.reshard()  # no backward follows to free the weights its root gathered
        return ref_logp

    def clip_gradients(self) -> float:
        return clip_gradients(list(self.policy.parameters()), self.config.training.max_grad_norm)

    @torch.no_grad()
    def sync_rollout_model(self) -> None:
        """The rollout copy takes the updated weights, gathered one tensor at a time under FSDP; then an engine with
        weights of its own (vLLM) takes them from it."""
        policy = self.unwrapped()
        if self.rollout_model is not policy:
            for target, source in zip(self.rollout_model.parameters(), policy.parameters()):
                if source.requires_grad:  # frozen ones (a LoRA base) never change
                    target.copy_(gathered(source))
        if isinstance(self.rollout_engine, VLLMEngine):
            self.rollout_engine.load_weights(self.rollout_weights())

    @torch.no_grad()
    def rollout_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The rollout model's weights as a plain model of its architecture names them, one whole tensor at a time:
        gathered from FSDP2 shards (a collective: every process reads them all, in order), LoRA adapters merged in
        (`W + scaling * B @ A`, in fp32). vLLM reloads all of them: its CPU build repacks a layer only whole."""
        if not self.lora:
            for name, param in self.rollout_model.named_parameters():
                yield name, gathered(param.detach())
            return
        from peft.tuners.lora import LoraLayer

        base = self.rollout_model.get_base_model()
        adapted = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
        for name, param in base.named_parameters():
            if any(part.startswith("lora_") for part in name.split(".")):
                continue
            owner, _, leaf = name.rpartition(".")
            tensor = gathered(param.detach())
            if owner.endswith(".base_layer"):
                owner = owner.removesuffix(".base_layer")
                if leaf == "weight":
                    tensor = tensor.float() + _lora_delta(adapted[owner])
            yield f"{owner}.{leaf}", tensor

    # ---- saves ------------------------------------------------------------------------------------

    def save_model(self, folder: Path) -> None:
        """A plain HF folder that from_pretrained loads as it is: full tensors, gathered from the shards under FSDP.
        LoRA adapters are merged into a copy of the rollout model, which is then the whole policy (itself, or its
        gathered copy under FSDP)."""
        self.accelerator.wait_for_everyone()
        main = self.accelerator.is_main_process
        state = None if self.lora else full_state_dict(self.unwrapped(), keep=main)
        if main:
            model = copy.deepcopy(self.rollout_model).merge_and_unload() if self.lora else self.unwrapped()

            def fill(staging: Path) -> None:
                model.save_pretrained(staging, state_dict=state)
                self.tokenizer.save_pretrained(staging)

            write_folder_atomically(folder, fill)
        self.accelerator.wait_for_everyone()

    def checkpoint_writer(self) -> Callable[[Path], None]:
        """Gathers the policy's and its optimizer's full state now (a collective: every process calls it); the
        returned function, on the main process, writes them into a checkpoint folder."""
        main = self.accelerator.is_main_process
        model_state = full_state_dict(self.unwrapped(), keep=main)
        optimizer_state = full_optimizer_state(self.raw_optimizer(), keep=main)

        def write(folder: Path) -> None:
            self.unwrapped().save_pretrained(folder / "model", state_dict=model_state)
            self.tokenizer.save_pretrained(folder / "model")
            optimizer_state_to_files(optimizer_state, folder, "optimizer")

        return write

    def restore(self, folder: Path, scheduler_state: dict) -> None:
        """The optimizer and the lr schedule of a checkpoint (the weights were loaded by `build`)."""
        load_optimizer_state(self.raw_optimizer(), optimizer_state_from_files(folder, "optimizer"))
        self.scheduler.load_state_dict(scheduler_state)
        reapply_lr_schedule(self.scheduler)


def _lora_delta(layer) -> torch.Tensor:
    """What a LoRA layer's active adapters add to its base weight, in fp32."""
    delta = sum(layer.scaling[adapter] * (gathered(layer.lora_B[adapter].weight).float() @ gathered(layer.lora_A[adapter].weight).float())
                for adapter in layer.active_adapters)
    return delta.T if layer.fan_in_fan_out else delta
