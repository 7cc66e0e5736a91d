"""What a resumed run may change in its config.

A checkpoint carries the config it was trained with (`checkpoint.CONFIG_FILE`). A resume may change how
the run is carried out: how many steps it runs (not fewer than it has reached), how often it saves and what
it logs, the memory and speed savers (which give the same update), where the run folder is. Every other change would
make it a different run than the one the checkpoint belongs to, and is refused with the list of changed
fields. The allowed changes take effect: the trainer reads them from the new config.
"""

from __future__ import annotations

from pathlib import Path

from uniapl.config import UniAPLConfig, flatten, load_yaml
from uniapl.errors import ConfigError
from uniapl.train.checkpoint import CONFIG_FILE

RESUMABLE_FIELDS = (
    "training.max_steps",
    "algorithm.sft_stage_steps",  # as long as the stages before the last keep their lengths
    "training.save_steps",
    "training.save_total_limit",
    "training.tensorboard",
    "training.progress",
    "training.max_consecutive_skipped_updates",
    "training.output_dir",
    "training.overwrite_output_dir",
    # savers of memory and time, which give the same update (tested)
    "training.micro_batch_size",
    "training.share_prompt_prefix",
    "model.gradient_checkpointing",
    "rollout.batch_size",
    "rollout.engine",  # among engines that decode the same tokens: a switch to or from vllm is refused (trainer)
    "rollout.vllm_kv_cache_gb",
    # AAPA's discriminator may move: the trainer checks its contents by the checksum each checkpoint records
    "algorithm.anchor.path",
)


def config_changes(saved: dict, new: dict) -> dict[str, tuple]:
    """Each field whose value differs, as (saved, new); fields only one side has (another version) are left out."""
    before, after = flatten(saved), flatten(new)
    return {name: (before[name], after[name]) for name in before if name in after and before[name] != after[name]}


def check_resume_config(checkpoint: Path, config: UniAPLConfig, step: int) -> list[str]:
    """Raise ConfigError listing every change that would make the resumed run a different run; return the
    allowed changes, as text, for the trainer to print."""
    path = checkpoint / CONFIG_FILE
    saved_raw = load_yaml(path)
    saved = UniAPLConfig.from_dict(saved_raw, source=str(path))
    changes = config_changes(saved_raw, config.to_dict())  # a field added since the save is not a change
    problems = [f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items() if name not in RESUMABLE_FIELDS]
    if config.training.max_steps < step:
        problems.append(f"training.max_steps: {config.training.max_steps} is below step {step}, which the checkpoint has reached")
    if saved.stages()[:-1] != config.stages()[:-1]:
        problems.append(f"the stages before the last would change from {saved.stages()[:-1]} to {config.stages()[:-1]} "
                        f"(set algorithm.sft_stage_steps to keep them)")
    if problems:
        raise ConfigError(
            f"--resume: {checkpoint} was trained with another config, and these changes would make this a different run: "
            + "; ".join(problems)
            + f". Resume with the settings of {path}, or start a new run in another training.output_dir. "
            f"A resume may change: {', '.join(RESUMABLE_FIELDS)}")
    return [f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items()]
