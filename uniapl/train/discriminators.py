"""The discriminator kinds behind one interface: `rows(layout, pooled, mask)` picks what it reads of some rows,
`score` and `logits` give their logits, `update(inputs)` trains it on the step's expert and policy rows.

`head` scores mean-pooled policy hidden states (features the step's forward passes already made);
`model` is a separate sequence classifier that reads the tokens itself. A stage without an adversarial
reward has none. The loss and the reward are the pure functions of uniapl.algorithms.adversarial.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from uniapl.algorithms.adversarial import DiscriminatorHead, accuracy, discriminator_loss
from uniapl.config import DiscriminatorConfig
from uniapl.generation.positions import position_ids
from uniapl.train.checkpoint import optimizer_state_from_files, optimizer_state_to_files
from uniapl.train.sharding import all_finite, full_optimizer_state, full_state_dict, is_sharded, load_full_state, load_optimizer_state

CHECKPOINT_FILE, OPTIMIZER_FILES = "discriminator.safetensors", "discriminator_optimizer"


@dataclass
class DiscriminatorInputs:
    """What the discriminator reads of the step's expert rows (demonstrations, LUFFY's members) and policy rows."""

    expert: Any
    policy: Any


@dataclass
class DiscriminatorUpdate:
    loss: float  # of its last update; NaN when skipped
    skipped: bool  # skipped for the accuracy cap


class Discriminator:
    """Trains `module` to score expert inputs high and policy inputs low."""

    needs_pooled = False  # whether it reads the pooled hidden states of the step's first pass

    def __init__(self, module: torch.nn.Module, config: DiscriminatorConfig):
        self.module = module
        self.config = config
        # set by the trainer in data-parallel runs: a replicated module averages its gradients across processes, and
        # the accuracy cap reads every process's logits, so that all processes skip an update or none does
        self.average_gradients: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.gather: Callable[[torch.Tensor], torch.Tensor] = lambda logits: logits
        self.optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=config.learning_rate)

    def _forward(self, inputs) -> torch.Tensor:
        raise NotImplementedError

    def rows(self, layout, pooled: torch.Tensor | None, mask: torch.Tensor) -> Any:
        """What it reads of the rows `mask` of the step's batch."""
        raise NotImplementedError

    @torch.no_grad()
    def logits(self, inputs) -> torch.Tensor:
        self.module.eval()
        return self._forward(inputs).float()

    def score(self, layout, pooled: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """The logits of the rows `mask` (none where it selects no row)."""
        if not mask.any():
            return torch.zeros(0, device=mask.device)
        return self.logits(self.rows(layout, pooled, mask))

    def inputs(self, layout, pooled: torch.Tensor | None) -> DiscriminatorInputs:
        return DiscriminatorInputs(self.rows(layout, pooled, layout.expert), self.rows(layout, pooled, layout.on_policy))

    def update(self, inputs: DiscriminatorInputs) -> DiscriminatorUpdate:
        """n_disc steps; skipped while accuracy is above the cap, so the policy keeps a usable signal."""
        expert_inputs, policy_inputs = inputs.expert, inputs.policy
        cap = self.config.max_accuracy
        if cap is not None:
            acc_expert, acc_policy = accuracy(self.gather(self.logits(expert_inputs)), self.gather(self.logits(policy_inputs)))
            if (acc_expert + acc_policy) / 2 > cap:
                return DiscriminatorUpdate(float("nan"), skipped=True)
        loss_value = float("nan")
        self.module.train()
        for _ in range(self.config.steps_per_update):
            loss = discriminator_loss(
                self._forward(expert_inputs).float(), self._forward(policy_inputs).float(), self.config.label_smoothing
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.average_gradients is not None:
                for p in self.module.parameters():
                    if p.grad is not None:
                        p.grad = self.average_gradients(p.grad)
            # an update with a non-finite gradient (the same on every process, after averaging) is skipped
            if all_finite([p.grad for p in self.module.parameters() if p.grad is not None]):
                self.optimizer.step()
            loss_value = loss.item()
        return DiscriminatorUpdate(loss_value, skipped=False)


    def checkpoint_writer(self, keep: bool) -> Callable[[Path], None]:
        """Gathers its and its optimizer's full state now (a collective); the returned function writes them into a
        checkpoint folder on the main process (`keep`)."""
        from safetensors.torch import save_file

        state = full_state_dict(self.module, keep=keep)
        optimizer_state = full_optimizer_state(self.optimizer, keep=keep)

        def write(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / CHECKPOINT_FILE))
            optimizer_state_to_files(optimizer_state, folder, OPTIMIZER_FILES)

        return write

    def restore(self, folder: Path) -> None:
        from safetensors.torch import load_file

        load_full_state(self.module, load_file(str(folder / CHECKPOINT_FILE)))
        load_optimizer_state(self.optimizer, optimizer_state_from_files(folder, OPTIMIZER_FILES))


class HeadDiscriminator(Discriminator):
    """Inputs: [N, H] pooled hidden states, detached from the policy."""

    needs_pooled = True

    def __init__(self, hidden_size: int, config: DiscriminatorConfig, device):
        super().__init__(DiscriminatorHead(hidden_size, config.width).to(device), config)

    def rows(self, layout, pooled, mask):
        return pooled[mask]

    def _forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features)


class LastTokenScorer(torch.nn.Module):
    """A sequence classifier's body and scalar head, scoring each row at its last real token (rows are left-padded
    prompts followed by right-padded responses). One forward for both, so that FSDP gathers a sharded one's
    weights through its own hooks. Its state dict has the classifier's keys."""

    def __init__(self, classifier):
        super().__init__()
        self.body_name = classifier.base_model_prefix
        self.add_module(self.body_name, classifier.base_model)
        self.score = classifier.score
        self._no_split_modules = classifier._no_split_modules  # its decoder layers, the units FSDP shards

    @property
    def base_model(self) -> torch.nn.Module:
        return getattr(self, self.body_name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask))
        last = attention_mask.shape[1] - 1 - attention_mask.flip(-1).argmax(-1)
        return self.score(out.last_hidden_state[torch.arange(len(last)), last]).squeeze(-1)


class ModelDiscriminator(Discriminator):
    """Inputs: (input_ids, attention_mask) of prompt + response; a scalar-head sequence classifier."""

    def __init__(self, start, pad_token_id: int, config: DiscriminatorConfig, device,
                 shard: Callable[[torch.nn.Module], torch.nn.Module] | None = None):
        """`start`: a name or folder to load the classifier from, or a causal LM (the start policy) whose body it
        copies, under a new scalar head. `shard`: FSDP's, which shards the classifier onto the device before its
        optimizer is built."""
        from transformers import AutoModelForSequenceClassification

        from uniapl.models import load_pretrained

        if isinstance(start, str):
            classifier = load_pretrained(AutoModelForSequenceClassification, start, num_labels=1)
        else:
            model_config = copy.deepcopy(start.config)
            model_config.num_labels = 1
            classifier = AutoModelForSequenceClassification.from_config(model_config).float()
            classifier.base_model.load_state_dict(start.base_model.state_dict())
        classifier.config.pad_token_id = pad_token_id
        module = LastTokenScorer(classifier)
        super().__init__(shard(module) if shard else module.to(device), config)  # fully_shard moves its shards

    def rows(self, layout, pooled, mask):
        return layout.batch.input_ids[mask], layout.batch.attention_mask[mask]

    def _forward(self, inputs) -> torch.Tensor:
        return self.module(*inputs)


def build_discriminator(config: DiscriminatorConfig, policy, pad_token_id: int, accelerator, sharding) -> Discriminator:
    """A co-trained discriminator: a `head` on the policy's features, or a `model` that starts from
    discriminator.model, or else from the policy's start weights (a model object passed to the trainer included)."""
    if config.kind == "head":
        discriminator = HeadDiscriminator(policy.config.get_text_config().hidden_size, config, accelerator.device)
    else:
        # sharded like the policy under FSDP, with its passes in fp32 as unsharded
        shard = None if sharding is None else dataclasses.replace(sharding, param_dtype=None).shard
        discriminator = ModelDiscriminator(config.model or policy, pad_token_id, config, accelerator.device, shard)
    if accelerator.num_processes > 1:
        discriminator.gather = accelerator.gather
        if not is_sharded(discriminator.module):  # FSDP averages a sharded one's gradients itself
            discriminator.average_gradients = lambda grad: accelerator.reduce(grad, reduction="mean")
    return discriminator
