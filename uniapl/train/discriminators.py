"""The discriminator kinds behind one interface: `inputs(layout, pooled)`, `logits(inputs)` and `update(inputs)`.

`head` scores mean-pooled policy hidden states (features the step's forward pass already made);
`model` is a separate sequence classifier that reads the tokens itself; `NullDiscriminator` stands in
where a stage has no adversarial reward. The loss and the reward are the pure functions of
uniapl.algorithms.adversarial.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from uniapl.algorithms.adversarial import DiscriminatorHead, accuracy, discriminator_loss
from uniapl.config import DiscriminatorConfig
from uniapl.train import metric_names as M
from uniapl.train.sharding import all_finite


@dataclass
class DiscriminatorInputs:
    """What the discriminator reads of the step's expert rows (demonstrations, LUFFY's members) and policy rows."""

    expert: Any
    policy: Any


class NullDiscriminator:
    """No adversarial reward in this stage: nothing to read, score or train."""

    module = None
    needs_pooled = False

    def inputs(self, layout, pooled) -> None:
        return None

    def update(self, inputs) -> dict:
        return {}


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

    @torch.no_grad()
    def logits(self, inputs) -> torch.Tensor:
        self.module.eval()
        return self._forward(inputs).float()

    def inputs(self, layout, pooled) -> DiscriminatorInputs:
        raise NotImplementedError

    def update(self, inputs: DiscriminatorInputs) -> dict:
        """n_disc steps; skipped while accuracy is above the cap, so the policy keeps a usable signal."""
        expert_inputs, policy_inputs = inputs.expert, inputs.policy
        stats = {M.DISC_LOSS: float("nan"), M.DISC_SKIPPED: 0.0}
        cap = self.config.max_accuracy
        if cap is not None:
            acc_expert, acc_policy = accuracy(self.gather(self.logits(expert_inputs)), self.gather(self.logits(policy_inputs)))
            if (acc_expert + acc_policy) / 2 > cap:
                stats[M.DISC_SKIPPED] = 1.0
                return stats
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
            stats[M.DISC_LOSS] = loss.item()
        return stats


class HeadDiscriminator(Discriminator):
    """Inputs: [N, H] pooled hidden states, detached from the policy."""

    needs_pooled = True

    def __init__(self, hidden_size: int, config: DiscriminatorConfig, device):
        super().__init__(DiscriminatorHead(hidden_size, config.width).to(device), config)

    def inputs(self, layout, pooled: torch.Tensor) -> DiscriminatorInputs:
        return DiscriminatorInputs(pooled[layout.expert], pooled[layout.on_policy])

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
        position_ids = torch.clamp(attention_mask.cumsum(-1) - 1, min=0)
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
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

    def inputs(self, layout, pooled) -> DiscriminatorInputs:
        batch = layout.batch
        pick = lambda rows: (batch.input_ids[rows], batch.attention_mask[rows])  # noqa: E731
        return DiscriminatorInputs(pick(layout.expert), pick(layout.on_policy))

    def _forward(self, inputs) -> torch.Tensor:
        return self.module(*inputs)
