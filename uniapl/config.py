"""Typed, validated configuration: YAML files plus `--set a.b=c` overrides.

Every choice of the method (../docs/config.md) is a field here. Component switches of the algorithm
(`use_rl`, `use_sft`, `lambda_mode`, `use_adversarial`, `expert_in_group`) default to None, which
means "as the algorithm's preset says"; setting one explicitly overrides the preset.
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

from uniapl.algorithms.presets import PRESETS, STAGED, Components
from uniapl.errors import ConfigError, UniaplError
from uniapl.io import read_text


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # an alias, a local HF folder, or a hub id
    # bf16: fp32 master weights, bf16 autocast for training (GPU) and a bf16 copy for generation;
    # auto: bf16 where the hardware runs it natively, else fp32
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class DataConfig:
    # RL prompts. A row may also carry the expert demonstration (`completion` or `messages`): the paired case.
    prompts: Optional[str] = None
    # expert demonstrations; when unset, the rows of `prompts` that carry a completion are the demonstrations
    expert: Optional[str] = None
    max_prompt_length: int = 512
    max_demo_length: int = 512  # longer demonstrations (in tokens, with EOS) are left out


@dataclass
class RewardConfig:
    name: str  # a built-in name (uniapl.rewards) or a dotted path module.function
    weight: float = 1.0


@dataclass
class RolloutConfig:
    num_generations: int = 4  # G, rollouts per prompt
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    batch_size: Optional[int] = None  # generation batch; None = all rollouts of a step at once
    # decode loop: plain (rows leave the batch as they finish), compiled (static KV cache + torch.compile, CUDA
    # graphs on a GPU); auto = compiled on a GPU, plain on a CPU
    engine: Literal["auto", "plain", "compiled"] = "auto"


@dataclass
class DiscriminatorConfig:
    kind: Literal["head", "model"] = "head"
    model: Optional[str] = None  # kind=model: the classifier's start model; None = the policy's start model
    width: int = 256  # kind=head: hidden width of the MLP
    learning_rate: float = 1e-4
    steps_per_update: int = 1  # n_disc
    label_smoothing: float = 0.0
    warmup_steps: int = 5  # steps the discriminator trains before r_adv enters the reward
    max_accuracy: Optional[float] = None  # skip an update while accuracy is above this (None = never skip)


@dataclass
class AlgorithmConfig:
    name: Literal[
        "sft", "grpo", "sft_then_grpo", "chord", "luffy", "uniapl", "uniapl_no_adv", "uniapl_fixed_lambda"
    ] = "uniapl"
    # component switches (None = from the preset of `name`)
    use_rl: Optional[bool] = None
    use_sft: Optional[bool] = None
    lambda_mode: Optional[Literal["learned", "fixed", "schedule"]] = None
    use_adversarial: Optional[bool] = None
    expert_in_group: Optional[bool] = None
    # GRPO
    eps_low: float = 0.2
    eps_high: float = 0.28
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    num_iterations: int = 1
    beta_kl: float = 0.0
    advantage: Literal["grpo", "dr_grpo"] = "grpo"  # dr_grpo: no std scaling
    normalize_rewards_separately: bool = False  # normalize r and r_adv separately, then add
    # SFT term and its multiplier
    sft_token_weighting: Literal["none", "chord_phi"] = "none"
    epsilon: float = 1.0  # budget on the per-token expert NLL
    lambda_init: float = 1.0
    eta_lambda: float = 0.05
    lambda_max: float = 10.0
    c_batch_ema: float = 0.0  # EMA decay of C_batch for the dual step (0 = none)
    lambda_fixed: float = 1.0  # lambda_mode=fixed
    # lambda_mode=schedule (CHORD): L = (1 - mu) L_RL + mu L_SFT, mu warms up from 0 to peak, then decays to final
    schedule_peak: float = 0.9
    schedule_final: float = 0.05
    schedule_warmup_steps: int = 2
    schedule_shape: Literal["cosine", "linear"] = "cosine"
    # adversarial reward
    alpha_adv: float = 0.1
    alpha_adv_warmup_steps: int = 10  # after the discriminator's warm-up, alpha ramps linearly from 0 over these steps
    adv_clip: float = 3.0
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    # expert in the group (LUFFY)
    luffy_gamma: float = 0.1
    # sft_then_grpo: steps of the SFT stage (None = half of training.max_steps)
    sft_stage_steps: Optional[int] = None
    # sft_then_grpo: demonstrations per SFT-stage step (None = training.demos_per_step); a larger batch lets a
    # short SFT stage see as many demonstrations as a one-stage run sees over all its steps
    sft_stage_demos_per_step: Optional[int] = None


@dataclass
class TrainingConfig:
    output_dir: str = "runs/uniapl"
    max_steps: int = 20
    prompts_per_step: int = 4  # B_P
    demos_per_step: int = 4  # B_E
    # rows (rollouts + demonstrations) per forward/backward pass; gradients add up over the step's
    # micro-batches, so the update is the same and activation memory is smaller (None = all rows at once)
    micro_batch_size: Optional[int] = None
    # rows with the same prompt (a prompt's rollouts, its LUFFY member, its paired demonstration) forward it once
    # per pass and share its KV cache, gradients included; off, or with gradient checkpointing, each row forwards it
    share_prompt_prefix: bool = True
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 42
    save_steps: int = 0  # 0 = only the final model
    save_total_limit: int = 2
    # an update whose loss or gradient norm is not finite is skipped (the weights stay finite); this many
    # skipped in a row stop the run, since the next ones would most likely be skipped too
    max_consecutive_skipped_updates: int = 3
    # a fresh start (no resume) in an output_dir that holds a run is refused unless this is set
    overwrite_output_dir: bool = False
    tensorboard: bool = True
    progress: bool = True


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
