"""Typed, validated configuration: YAML files plus `--set a.b=c` overrides.

Every choice of the method (../docs/config.md) is a field here. Component switches of the algorithm
(`use_rl`, `use_sft`, `lambda_mode`, `use_adversarial`, `expert_in_group`, `use_anchor`, `use_task_reward`) default to None, which
means "as the algorithm's preset says"; setting one explicitly overrides the preset.

Each field's help (`option`) is the text of docs/config.md's tables. `algorithm.name` allows the names of the
presets; the registries of `loss_aggregation`, `advantage`, `sft_token_weighting` and `rollout.engine` live in
modules that import torch, which would slow `uniapl --help`, so their Literals repeat the names and
tests/test_config_docs.py holds the two equal.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from uniapl.algorithms.presets import ALGORITHM_NAMES, PRESETS, STAGED, Components
from uniapl.errors import ConfigError, UniaplError
from uniapl.io import read_text


def option(default: Any, help_text: str) -> Any:
    """A field with its help, from which docs/config.md's tables are rendered (scripts/config_docs.py), so the doc
    cannot drift from the code. A list default is copied for each config."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


def preset_switch(help_text: str) -> Any:
    """A component switch: unset, the preset of `algorithm.name` decides; set, it overrides the preset."""
    return option(None, f"{help_text}; null: as the preset of `name` says")


@dataclass
class LoraConfig:
    enabled: bool = option(
        False, "train LoRA adapters (peft) on a frozen base; with `bf16` the base stays in bf16. The final folder has "
        "the adapters merged")
    r: int = option(16, "rank of the adapters (peft's LoraConfig `r`)")
    alpha: int = option(32, "scale of the adapters' update, `alpha / r` (peft's LoraConfig `lora_alpha`)")
    dropout: float = option(0.05, "dropout on the adapters' input (peft's LoraConfig `lora_dropout`)")
    target_modules: list[str] = option(
        ["q_proj", "k_proj", "v_proj", "o_proj"], "the modules that get adapters (peft's LoraConfig `target_modules`)")


@dataclass
class ModelConfig:
    name: str = option(
        "smollm2-135m-instruct",
        "a built-in alias (`smollm2-135m-instruct`, `tiny-random-smollm2`), a local HF folder, or a hub id (needs a "
        "network). Not used when `UniAPLTrainer(model=...)` gets a model object: that object is the policy, its "
        "reference and the `model` discriminator's start, and the tokenizer is `processing_class`, or else the one in "
        "the object's `name_or_path` folder (an error says so when that is not a local folder)")
    dtype: Literal["auto", "bf16", "fp32"] = option(
        "auto",
        "`auto`: `bf16` where it runs faster than fp32, else `fp32`: on a GPU with bf16, and on a CPU with AMX; not on "
        "a CPU without bf16 instructions (emulated, several times slower); on a CPU with AVX512-BF16 but no AMX, a "
        "512x512 matmul is timed once on one core and bf16 is picked only if it is over 1.2x faster (on a Xeon with "
        "AVX512-BF16 and no AMX, torch 2.13, bf16 measured 0.55 to 0.6x fp32's speed, so `auto` picks fp32 there). A "
        "run resumed with `auto` keeps the dtype it was trained in (recorded in each checkpoint's "
        "`trainer_state.json`), whatever this machine would pick, and every process of a distributed run takes the "
        "main process's choice. `bf16`: fp32 master weights and optimizer, every training pass (policy and reference "
        "model) in bf16 autocast, on GPUs and CPUs alike (on a CPU with AMX a bf16 matmul's forward and backward runs "
        "about 5x faster than fp32 on one core), and a bf16 copy of the weights for generation (synced after each "
        "update); `fp32`: everything fp32")
    gradient_checkpointing: bool = option(False, "trade compute for activation memory")
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapters instead of training every weight"})


@dataclass
class DataConfig:
    prompts: Optional[str] = option(None, "RL prompts: a `.jsonl` file or a `datasets.save_to_disk` folder")
    expert: Optional[str] = option(
        None, "expert demonstrations; unset = the rows of `prompts` that carry a completion (the paired case)")
    max_prompt_length: int = option(512, "prompts keep their last tokens")
    max_demo_length: int = option(
        512,
        "the longest demonstration, in tokens with its EOS. Longer ones are left out, with a warning that counts them "
        "(cut, they would teach the model to stop mid-sentence); the demonstrations that stay are trained on, shown to "
        "the discriminator and, under LUFFY, scored exactly as tokenized")


@dataclass
class RewardConfig:
    name: str = option(dataclasses.MISSING, "a built-in reward (`uniapl.rewards`) or a dotted path `package.module.function`")
    weight: float = option(
        1.0, "the function's weight in the task reward, the weighted sum of all functions (a `None` score counts as 0)")


@dataclass
class RolloutConfig:
    num_generations: int = option(
        4, "`G`, rollouts per prompt; at least 2 when the algorithm runs RL (as in TRL): advantages compare the rollouts "
        "of a prompt, so with one every advantage is 0")
    max_new_tokens: int = option(128, "generation budget; a rollout stops at EOS")
    temperature: float = option(1.0, "sampling temperature: rollouts are drawn from `softmax(logits / temperature)`")
    top_p: float = option(
        1.0, "sampling keeps the smallest set of tokens whose probability exceeds `top_p`, after `top_k` (1.0 is off)")
    top_k: int = option(0, "sampling keeps the `top_k` most likely tokens (`top_k: 0` is off)")
    batch_size: Optional[int] = option(None, "generation batch; null: all rollouts of a step at once")
    engine: Literal["auto", "plain", "compiled", "vllm"] = option(
        "auto",
        "the decode loop. `plain`: rows leave the batch and the KV cache as they finish; `compiled`: a static KV cache "
        "and a decode step compiled with `torch.compile` (CUDA graphs on a GPU), fixed shapes (finished rows ride "
        "along until all are done; the cache is sized in multiples of 128 tokens so that later steps reuse the "
        "compiled step; the first call compiles, tens of seconds). Both decode the same tokens (greedy and seeded "
        "sampling, tested on a CPU with a tiny model). The compiled path has not yet been run on a GPU here (no GPU in "
        "its session); `rollout.engine=plain` is the fallback. `vllm`: vLLM in the training process, built once, "
        "taking the policy's weights from memory after every update (LoRA merged, FSDP2 shards gathered); the same "
        "sampling settings and seeds per rollout, other noise, so other tokens than `plain`'s. It lives in a second "
        "environment: `bash scripts/setup.sh --vllm`, then `.venv-vllm/bin/uniapl train ...` (docs/vllm.md). `auto`: "
        "`vllm` where it is installed and supports the model in a run with RL, else `compiled` on a GPU and `plain` on "
        "a CPU")
    vllm_kv_cache_gb: float = option(
        2.0, "`engine: vllm`: its KV cache in GiB, in GPU memory or RAM; it bounds the longest sequence and how many "
        "are decoded at once (more wait their turn)")


@dataclass
class DiscriminatorConfig:
    kind: Literal["head", "model"] = option(
        "head", "`head`: an MLP on the policy's mean-pooled hidden states (no extra forward pass); `model`: a separate "
        "sequence classifier")
    model: Optional[str] = option(
        None, "`kind: model`: the classifier's start weights; unset, the policy's start weights (a model object passed "
        "to the trainer included) under a new scalar head")
    width: int = option(256, "`kind: head`: MLP width")
    learning_rate: float = option(1e-4, "its optimizer's learning rate")
    steps_per_update: int = option(1, "`n_disc`, its optimizer steps per training step")
    label_smoothing: float = option(
        0.0, "label smoothing of its loss: the expert's target is `1 - label_smoothing`, the policy's `label_smoothing`")
    warmup_steps: int = option(
        5,
        "steps (of the stage) the discriminator trains before `r_adv` enters the reward: an untrained discriminator "
        "scores noise. Its loss weighs the expert and the policy class equally (a mean per class), however many rows "
        "each has, and its accuracy on each class is logged as `disc/acc_expert` and `disc/acc_policy`")
    max_accuracy: Optional[float] = option(
        None, "skip its update while its accuracy is above this; null: never skip")


@dataclass
class AnchorConfig:
    path: Optional[str] = option(
        None, "the folder of a discriminator trained by `uniapl discriminator train` ([aapa.md](aapa.md)); required where "
        "a stage uses the anchoring term. It is loaded frozen (eval mode, no gradients, no optimizer), and a run resumes "
        "only with the same folder contents (its manifest's checksum is kept in each checkpoint)")
    variant: Optional[Literal["minilm", "policy", "ngram"]] = option(
        None, "the variant the folder must hold (an error names both where it holds another); null: whichever it holds")
    encoder: Optional[str] = option(
        None, "where its encoder loads from: null for the variant's own (`minilm`: the built-in all-MiniLM-L6-v2; "
        "`policy`: this run's `model.name`, the start policy). Its tokenizer and weights must be the ones it was trained "
        "with (checked by fingerprint; an error names both)")
    weight: float = option(
        0.1, "`alpha_anchor`: the anchoring reward's weight in `r~ = r + alpha_anchor * a`, added before the group "
        "normalization (under `grpo` advantages with `a` alone, as in `sft_aapa`, the weight cancels out)")
    transform: Literal["clip", "log_sigmoid"] = option(
        "clip", "`a` from the logit `s`: `clip`: `clip(s, -c, c)`; `log_sigmoid`: `max(log sigmoid(s), -c)`, the "
        "log-probability of expert, which only penalizes")
    clip: float = option(3.0, "`c` of `transform`")
    drift_sample: int = option(
        16, "held-out expert responses of the discriminator's folder scored every step as a drift check "
        "(`anchor/heldout_expert_score`: it must not move, the discriminator being frozen); 0: none")


@dataclass
class AlgorithmConfig:
    name: Literal[ALGORITHM_NAMES] = option(
        "uniapl", "the algorithm: a preset of the component switches below, or `sft_then_grpo` or `staged_aapa`, two "
        "presets run as stages (the table above)")
    # component switches
    use_rl: Optional[bool] = preset_switch("GRPO on the policy's own rollouts")
    use_sft: Optional[bool] = preset_switch("the SFT term on the expert demonstrations")
    lambda_mode: Optional[Literal["learned", "fixed", "schedule"]] = preset_switch(
        "the SFT term's multiplier: `learned` (`lambda` by dual ascent), `fixed` (`lambda_fixed`) or `schedule` "
        "(CHORD's `mu`, a warm-up then a decay, which mixes the terms convexly)")
    use_adversarial: Optional[bool] = preset_switch("the discriminator's reward `r_adv` in the reward")
    expert_in_group: Optional[bool] = preset_switch("LUFFY: the paired demonstration joins its prompt's group")
    use_anchor: Optional[bool] = preset_switch("AAPA: the fixed discriminator's anchoring reward `a` in the reward (`anchor`)")
    use_task_reward: Optional[bool] = preset_switch(
        "the reward functions' score in the reward; off, GRPO's reward is the anchoring reward alone (AAPA's SFT)")
    # GRPO
    eps_low: float = option(0.2, "lower clip range of the ratio: `clip(rho, 1 - eps_low, 1 + eps_high)`")
    eps_high: float = option(
        0.28, "upper clip range of the ratio: `clip(rho, 1 - eps_low, 1 + eps_high)`; larger than `eps_low`, it is "
        "clip-higher")
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = option(
        "token_mean",
        "`token_mean` (DAPO), `seq_mean_token_mean` (original GRPO), `seq_mean_token_sum_norm` (Dr. GRPO)")
    num_iterations: int = option(1, "policy updates per batch of rollouts")
    beta_kl: float = option(
        0.0,
        "weight of the k3 KL to the reference model, a frozen copy of the policy as the stage started (the model "
        "object, if one was passed; under `sft_then_grpo`, the SFT stage's final model); 0 loads no reference model")
    advantage: Literal["grpo", "dr_grpo"] = option("grpo", "`grpo`: `(r - mean) / (std + 1e-4)`; `dr_grpo`: `r - mean`")
    normalize_rewards_separately: bool = option(False, "normalize task and adversarial rewards separately, then add")
    # SFT term and its multiplier
    sft_token_weighting: Literal["none", "chord_phi"] = option(
        "none", "`chord_phi` weights each expert token by `p(1 - p)` (CHORD-phi; the weight is detached)")
    epsilon: float = option(1.0, "the constraint budget on the per-token expert NLL `C`")
    lambda_init: float = option(1.0, "`lambda` as dual ascent starts (see `eta_lambda`)")
    eta_lambda: float = option(
        0.05, "the step `eta` of dual ascent: `lambda <- clip(lambda + eta (C - epsilon), 0, lambda_max)`")
    lambda_max: float = option(10.0, "the upper bound of `lambda` in dual ascent (see `eta_lambda`)")
    c_batch_ema: float = option(0.0, "EMA decay of `C_batch` before the dual step")
    lambda_fixed: float = option(1.0, "`lambda` when `lambda_mode: fixed`")
    schedule_peak: float = option(
        0.9, "`lambda_mode: schedule` (CHORD's `mu`, in [0, 1], logged as `lambda`): `mu` rises from 0 at the first "
        "step, linearly, to `schedule_peak` at step `schedule_warmup_steps`")
    schedule_final: float = option(
        0.05, "`lambda_mode: schedule`: after its peak, `mu` decays to `schedule_final` at the stage's last step (with "
        "fewer than `schedule_warmup_steps + 2` steps it does not get there)")
    schedule_warmup_steps: int = option(2, "`lambda_mode: schedule`: the step at which `mu`, linear from 0, reaches `schedule_peak`")
    schedule_shape: Literal["cosine", "linear"] = option(
        "cosine", "`lambda_mode: schedule`: `mu`'s decay from `schedule_peak` to `schedule_final`, `cosine` or `linear`")
    # adversarial reward
    alpha_adv: float = option(
        0.1, "weight of `r_adv` in the reward: 0 during `discriminator.warmup_steps`, then a linear ramp that reaches "
        "`alpha_adv` after `alpha_adv_warmup_steps` steps. Logged as `adv/alpha`")
    alpha_adv_warmup_steps: int = option(
        10, "steps of the linear ramp of `r_adv`'s weight from 0 to `alpha_adv`, after `discriminator.warmup_steps` "
        "(0: at once)")
    adv_clip: float = option(3.0, "`r_adv = clip(s, -c, c)`")
    discriminator: DiscriminatorConfig = field(
        default_factory=DiscriminatorConfig, metadata={"help": "the classifier of expert against policy that scores `r_adv`"})
    # AAPA's anchoring reward
    anchor: AnchorConfig = field(
        default_factory=AnchorConfig, metadata={"help": "AAPA's fixed discriminator and its anchoring reward `a`"})
    # expert in the group (LUFFY)
    luffy_gamma: float = option(0.1, "LUFFY's shaping `f(p) = p / (p + gamma)` for expert tokens in a group")
    # staged algorithms: sft_then_grpo, staged_aapa
    sft_stage_steps: Optional[int] = option(
        None, "`sft_then_grpo`, `staged_aapa`: steps of the SFT stage; null: half of `training.max_steps`")
    sft_stage_demos_per_step: Optional[int] = option(
        None,
        "`sft_then_grpo`, `staged_aapa`: demonstrations per step of the SFT stage; a short SFT stage with a larger batch can see as "
        "many demonstrations as a one-stage run sees over all its steps (the reproduction's split: docs/results.md); "
        "null: `training.demos_per_step`")


@dataclass
class TrainingConfig:
    output_dir: str = option("runs/uniapl", "`config.yaml`, `metrics.jsonl`, `tensorboard/`, `checkpoints/`, `final/`")
    max_steps: int = option(
        20,
        "steps, all stages together. A step is one generation round: `B_P x G` rollouts and `B_E` demonstrations, "
        "then `algorithm.num_iterations` optimizer updates on that batch. Every other `*_steps` field counts the same "
        "steps")
    prompts_per_step: int = option(4, "`B_P`, prompts per step (global, split across processes)")
    demos_per_step: int = option(4, "`B_E`, demonstrations per step (global, split across processes)")
    micro_batch_size: Optional[int] = option(
        None,
        "rows (rollouts and demonstrations, per process) in each forward/backward pass; the gradients of a step's "
        "micro-batches add up, each normalized by the whole step's token and sequence counts, so the update equals the "
        "one-pass update (tested) with less activation memory. With the head discriminator, rollouts that take several "
        "micro-batches cost one extra no-grad forward of those passes, which pools the hidden states that the "
        "adversarial reward needs before any loss (one micro-batch that holds them all gives them in its own pass). "
        "null: all rows at once")
    share_prompt_prefix: bool = option(
        True,
        "rows with the same prompt in a pass (a prompt's `G` rollouts, LUFFY's expert member, the paired "
        "demonstration) forward that prompt once and attend to its KV cache, with gradients through it; loss and "
        "gradients equal the per-row passes (tested). Used where every layer of the model is full attention, and not "
        "with `model.gradient_checkpointing` (the recomputed layers cannot keep the cache); micro-batches keep a "
        "prompt's rows together. false: each row forwards its prompt")
    learning_rate: float = option(1e-6, "AdamW's learning rate")
    weight_decay: float = option(0.0, "AdamW's weight decay")
    adam_beta1: float = option(0.9, "AdamW's beta1")
    adam_beta2: float = option(0.999, "AdamW's beta2")
    adam_epsilon: float = option(1e-8, "AdamW's epsilon")
    lr_scheduler: Literal["constant", "linear", "cosine"] = option(
        "constant",
        "`constant`, `linear` or `cosine` decay after a linear warm-up of `warmup_steps` steps. The schedule advances "
        "once per optimizer update, and spans each stage's `steps x num_iterations` updates, so the last update of a "
        "stage still has a learning rate above 0 (`linear`, `cosine`)")
    warmup_steps: int = option(0, "steps of the learning rate's linear warm-up, before `lr_scheduler`'s decay")
    max_grad_norm: float = option(1.0, "gradient clipping")
    seed: int = option(42, "data order, sampling and initialization")
    save_steps: int = option(0, "checkpoint every N steps (0: only the final model)")
    save_total_limit: int = option(2, "checkpoints to keep, the newest N")
    max_consecutive_skipped_updates: int = option(
        3, "an update whose gradient norm is NaN or inf is skipped, so the weights stay finite; this many skipped in a "
        "row stop the run ([reliability.md](reliability.md))")
    overwrite_output_dir: bool = option(
        False, "a fresh start (no `--resume`) in an `output_dir` that already holds a run (checkpoints, `final/`, "
        "logged steps) is refused, so nothing saved is lost; true starts it over")
    tensorboard: bool = option(True, "TensorBoard events")
    progress: bool = option(True, "the progress bar")


@dataclass
class UniAPLConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: list[RewardConfig] = field(default_factory=list)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "UniAPLConfig":
        config = _build(cls, raw, prefix="", source=source)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "UniAPLConfig":
        raw: dict = {}
        source = "overrides"
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise ConfigError(f"config file '{path}' does not exist")
            raw = load_yaml(path) or {}
            if not isinstance(raw, dict):
                raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(raw).__name__}")
            source = str(path)
        for override in overrides or []:
            apply_override(raw, override)
        return cls.from_dict(raw, source=source)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def components(self, stage: str) -> Components:
        """A stage's switches (see `stages()`): its preset plus the switches set explicitly."""
        algo = self.algorithm
        preset = PRESETS[stage]
        explicit = {k: getattr(algo, k) for k in dataclasses.asdict(preset) if getattr(algo, k) is not None}
        return dataclasses.replace(preset, **explicit)

    def stages(self) -> list[tuple[str, int]]:
        """(preset name, steps) for each stage: one for single-stage algorithms, two for sft_then_grpo."""
        total = self.training.max_steps
        if self.algorithm.name in STAGED:
            first, second = STAGED[self.algorithm.name]
            sft_steps = self.algorithm.sft_stage_steps if self.algorithm.sft_stage_steps is not None else total // 2
            return [(first, sft_steps), (second, total - sft_steps)]
        return [(self.algorithm.name, total)]

    def demos_per_step(self, stage_index: int) -> int:
        """Demonstrations a step of this stage takes: sft_then_grpo's SFT stage may take its own number."""
        staged_sft = self.algorithm.name in STAGED and stage_index == 0
        if staged_sft and self.algorithm.sft_stage_demos_per_step is not None:
            return self.algorithm.sft_stage_demos_per_step
        return self.training.demos_per_step

    def runs_rl(self) -> bool:
        return any(self.components(stage).use_rl for stage, _ in self.stages())

    def needs_task_reward(self) -> bool:
        return any(c.use_rl and c.use_task_reward for c in (self.components(stage) for stage, _ in self.stages()))

    def uses_anchor(self) -> bool:
        return any(self.components(stage).use_anchor for stage, _ in self.stages())

    def validate(self) -> None:
        def check(ok: bool, field_name: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"{field_name}: {message}")

        t, r, a, d = self.training, self.rollout, self.algorithm, self.algorithm.discriminator
        m, lora, data = self.model, self.model.lora, self.data
        check(bool(m.name), "model.name", "must name an alias, a local model folder or a hub id")
        check(lora.r >= 1, "model.lora.r", f"must be >= 1 (the rank of the adapters), got {lora.r}")
        check(lora.alpha > 0, "model.lora.alpha", f"must be > 0, got {lora.alpha}")
        check(0 <= lora.dropout < 1, "model.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
        check(bool(lora.target_modules), "model.lora.target_modules", "must name at least one module, e.g. [q_proj, v_proj]")
        # prompts keep their last max_prompt_length tokens
        check(data.max_prompt_length >= 1, "data.max_prompt_length", f"must be >= 1 (prompts keep their last N tokens), got {data.max_prompt_length}")
        check(data.max_demo_length >= 1, "data.max_demo_length", f"must be >= 1, got {data.max_demo_length}")
        check(bool(t.output_dir), "training.output_dir", "must name a folder")
        check(0 <= t.seed < 2**32, "training.seed", f"must be in [0, 2**32 - 1], got {t.seed}")
        check(t.learning_rate > 0, "training.learning_rate", f"must be > 0, got {t.learning_rate}")
        check(t.max_steps > 0, "training.max_steps", f"must be > 0, got {t.max_steps}")
        check(t.prompts_per_step > 0, "training.prompts_per_step", "must be > 0")
        check(t.demos_per_step > 0, "training.demos_per_step", "must be > 0")
        check(t.micro_batch_size is None or t.micro_batch_size > 0, "training.micro_batch_size", "must be > 0, or null for all rows at once")
        check(t.weight_decay >= 0, "training.weight_decay", "must be >= 0")
        check(t.adam_epsilon > 0, "training.adam_epsilon", "must be > 0")
        for name in ("adam_beta1", "adam_beta2"):
            check(0 <= getattr(t, name) < 1, f"training.{name}", f"must be in [0, 1), got {getattr(t, name)}")
        check(t.warmup_steps >= 0, "training.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
        check(t.max_grad_norm > 0, "training.max_grad_norm", "must be > 0")
        check(t.save_steps >= 0, "training.save_steps", "must be >= 0 (0 saves only the final model)")
        check(t.save_total_limit >= 1, "training.save_total_limit", "must be >= 1")
        check(t.max_consecutive_skipped_updates >= 1, "training.max_consecutive_skipped_updates", "must be >= 1")
        check(r.num_generations >= 1, "rollout.num_generations", "must be >= 1")
        # one rollout per prompt is its own group mean: every advantage is 0 and RL learns nothing (TRL requires 2 too)
        check(r.num_generations >= 2 or not self.runs_rl(), "rollout.num_generations",
              f"must be >= 2 for algorithm '{a.name}', which runs RL: group-relative advantages compare a prompt's rollouts")
        check(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
        check(r.temperature > 0, "rollout.temperature", "must be > 0")
        check(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        check(r.top_k >= 0, "rollout.top_k", "must be >= 0 (0 = off)")
        check(r.batch_size is None or r.batch_size >= 1, "rollout.batch_size", "must be >= 1, or null for all rollouts of a step at once")
        check(r.vllm_kv_cache_gb > 0, "rollout.vllm_kv_cache_gb", "must be > 0")
        check(0 <= a.eps_low < 1, "algorithm.eps_low", "must be in [0, 1)")
        check(a.eps_high >= 0, "algorithm.eps_high", "must be >= 0")
        check(a.num_iterations >= 1, "algorithm.num_iterations", "must be >= 1")
        check(a.beta_kl >= 0, "algorithm.beta_kl", "must be >= 0")
        check(a.epsilon >= 0, "algorithm.epsilon", "must be >= 0")
        check(a.eta_lambda >= 0, "algorithm.eta_lambda", "must be >= 0")
        check(a.lambda_max > 0, "algorithm.lambda_max", "must be > 0")
        check(0 <= a.lambda_init <= a.lambda_max, "algorithm.lambda_init", "must be in [0, lambda_max]")
        check(0 <= a.c_batch_ema < 1, "algorithm.c_batch_ema", "must be in [0, 1)")
        for name in ("schedule_peak", "schedule_final"):  # CHORD's mu weighs (1 - mu) L_RL + mu L_SFT
            check(0 <= getattr(a, name) <= 1, f"algorithm.{name}", f"must be in [0, 1], got {getattr(a, name)}")
        check(a.schedule_warmup_steps >= 0, "algorithm.schedule_warmup_steps", "must be >= 0")
        check(a.alpha_adv >= 0, "algorithm.alpha_adv", "must be >= 0")
        check(a.alpha_adv_warmup_steps >= 0, "algorithm.alpha_adv_warmup_steps", "must be >= 0")
        check(a.adv_clip > 0, "algorithm.adv_clip", "must be > 0")
        check(a.luffy_gamma > 0, "algorithm.luffy_gamma", "must be > 0")
        anchor = a.anchor
        check(anchor.weight >= 0, "algorithm.anchor.weight", f"must be >= 0, got {anchor.weight}")
        check(anchor.clip > 0, "algorithm.anchor.clip", f"must be > 0, got {anchor.clip}")
        check(anchor.drift_sample >= 0, "algorithm.anchor.drift_sample", f"must be >= 0 (0: no drift check), got {anchor.drift_sample}")
        check(bool(anchor.path) or not self.uses_anchor(), "algorithm.anchor.path",
              f"algorithm '{a.name}' adds AAPA's anchoring reward and needs the folder of a discriminator trained with "
              f"`uniapl discriminator train` (docs/aapa.md)")
        check(d.width >= 1, "algorithm.discriminator.width", f"must be >= 1, got {d.width}")
        check(d.learning_rate > 0, "algorithm.discriminator.learning_rate", "must be > 0")
        check(d.steps_per_update >= 1, "algorithm.discriminator.steps_per_update", "must be >= 1")
        check(d.warmup_steps >= 0, "algorithm.discriminator.warmup_steps", "must be >= 0")
        check(0 <= d.label_smoothing < 0.5, "algorithm.discriminator.label_smoothing", "must be in [0, 0.5)")
        check(d.max_accuracy is None or 0 < d.max_accuracy <= 1, "algorithm.discriminator.max_accuracy", "must be in (0, 1]")
        check(a.sft_stage_demos_per_step is None or a.sft_stage_demos_per_step > 0, "algorithm.sft_stage_demos_per_step",
              "must be > 0, or null for training.demos_per_step")
        if a.name in STAGED and a.sft_stage_steps is not None:
            check(0 < a.sft_stage_steps < t.max_steps, "algorithm.sft_stage_steps", f"must be in (0, training.max_steps={t.max_steps})")
        for i, reward in enumerate(self.rewards):
            check(bool(reward.name), f"rewards[{i}].name", "must name a built-in reward or a dotted path")


# ---- building dataclasses from plain dicts, with errors that name the field ---------------------


def _build(cls, raw: Any, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix[:-1] or 'config'} ({source}): expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"section '{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigError(f"unknown field '{prefix}{unknown[0]}' ({source}); {where} allows: {', '.join(fields)}")
    values = {name: _convert(hints[name], value, prefix + name, source) for name, value in raw.items()}
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"field '{prefix}{missing[0]}' is required ({source})")
    return cls(**values)


def _convert(tp, value, name: str, source: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, name, source)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{name}: '{value}' is not allowed ({source}); allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r} ({source})")
        return [_convert(item_type, v, f"{name}[{i}]", source) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=name + ".", source=source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r} ({source})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r} ({source})")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r} ({source})")
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {value} ({source})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r} ({source})")
        return value
    raise TypeError(f"unsupported config type {tp} for {name}")


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested config sections as dotted keys: {'training': {'seed': 1}} -> {'training.seed': 1}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping, where plain YAML keeps the last one silently."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"the key '{key}' appears twice in one section; keep one", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path):
    """A YAML file's contents; bad bytes, bad syntax or a repeated key are a ConfigError naming the line."""
    try:
        return yaml.load(read_text(path), Loader=_UniqueKeyLoader)
    except UniaplError as exc:
        raise ConfigError(f"config file {exc}") from None
    except yaml.MarkedYAMLError as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise ConfigError(f"config file {path}{line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from None


def apply_override(raw: dict, override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to a nested dict, in place."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{override}' must look like section.field=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value
