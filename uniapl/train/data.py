"""The training data: RL prompts and expert demonstrations, loaded once, and the endless seeded streams each
step draws its batch from."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from uniapl.config import UniAPLConfig
from uniapl.errors import DataError, UniaplError, UniaplWarning
from uniapl.examples import Example, examples_from_records, expert_demos, load_examples


@dataclass
class Demonstration:
    """An expert demonstration and its completion's token ids, ending with EOS: the one tokenization that the SFT
    term trains on, the discriminator reads and LUFFY's expert member is scored on (as the decoded ids)."""

    example: Example
    completion_ids: list[int]


def load_training_data(config: UniAPLConfig, tokenizer, train_dataset, expert_dataset, warn: bool) -> tuple[list[Example], list[Demonstration]]:
    """The prompts, and the demonstrations where a stage uses them: from the datasets passed to the trainer, else
    from the files the config names. Under LUFFY only prompts paired with a demonstration stay."""
    if train_dataset is not None:
        prompts = examples_from_records(train_dataset, "train_dataset")
    elif config.data.prompts:
        prompts = load_examples(config.data.prompts)
    else:
        raise UniaplError("data.prompts: no training data; set it to a .jsonl file or a datasets folder")
    if expert_dataset is not None:
        expert = examples_from_records(expert_dataset, "expert_dataset")
    elif config.data.expert:
        expert = load_examples(config.data.expert)
    else:
        expert = None
    plan = [config.components(stage) for stage, _ in config.stages()]
    if not any(c.use_sft or c.use_adversarial or c.expert_in_group for c in plan):
        return prompts, []
    examples = expert_demos(prompts, expert)
    if not examples:
        raise DataError(
            f"algorithm '{config.algorithm.name}' needs expert demonstrations: set data.expert, or give rows of "
            f"data.prompts a 'completion'"
        )
    demos = tokenized_demonstrations(examples, tokenizer, config.data.max_demo_length, warn)
    if any(c.expert_in_group for c in plan):
        paired = {d.example.prompt_key() for d in demos}
        prompts = [p for p in prompts if p.prompt_key() in paired]
        if not prompts:
            raise DataError("algorithm.expert_in_group needs prompts paired with a demonstration; none of data.prompts has one")
    return prompts, demos


def tokenized_demonstrations(examples: list[Example], tokenizer, limit: int, warn: bool) -> list[Demonstration]:
    """Each demonstration tokenized once. Those longer than `limit` (data.max_demo_length) are left out: cut, they
    would teach the model to stop mid-sentence."""
    demos = []
    for example in examples:
        ids = tokenizer(example.completion_text(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) <= limit:
            demos.append(Demonstration(example, ids))
    left_out = len(examples) - len(demos)
    if not demos:
        raise DataError(f"data.max_demo_length={limit}: all {left_out} expert demonstrations are longer (in tokens, "
                        f"with EOS); raise it")
    if left_out and warn:
        warnings.warn(f"data.max_demo_length={limit}: {left_out} of {len(examples)} expert demonstrations are longer "
                      f"(in tokens, with EOS) and are left out", UniaplWarning, stacklevel=3)
    return demos


def cursor_indices(n_items: int, cursor: int, count: int, seed: int) -> list[int]:
    """Items cursor..cursor+count of an endless stream of seeded per-epoch permutations: resumable by cursor alone."""
    out = []
    for position in range(cursor, cursor + count):
        epoch, offset = divmod(position, n_items)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n_items)[offset]))
    return out


@dataclass
class Stream:
    """One data stream of a run: its items in seeded order, split across the processes."""

    items: list
    seed: int
    process_index: int
    num_processes: int

    def take(self, cursor: int, count: int) -> tuple[list, int]:
        """This process's slice of the `count` items from `cursor` on, and the global index of its first item."""
        per_process = count // self.num_processes
        first = self.process_index * per_process
        indices = cursor_indices(len(self.items), cursor, count, self.seed)[first : first + per_process]
        return [self.items[i] for i in indices], first
