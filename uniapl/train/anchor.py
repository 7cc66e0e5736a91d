"""AAPA's discriminator as a run uses it: loaded once from its folder, frozen, scoring each step's rollouts (the
anchoring reward) and a fixed sample of held-out expert responses (the drift check)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from uniapl.algorithms.anchoring import anchoring_reward
from uniapl.anchor.folder import fingerprint, heldout_expert_responses, load_discriminator
from uniapl.config import AnchorConfig
from uniapl.errors import ConfigError


@dataclass
class AnchorScores:
    """The discriminator's logits on a step's rollouts (and LUFFY's expert members), the rewards a = f(logit) they
    make, and the drift check's score."""

    policy_logits: torch.Tensor
    member_logits: torch.Tensor
    policy_rewards: torch.Tensor
    member_rewards: torch.Tensor
    weight: float
    heldout_expert_score: float | None


class FrozenAnchor:
    def __init__(self, config: AnchorConfig, start_policy: str | None, device):
        self.config = config
        self.folder = Path(config.path)
        self.model = load_discriminator(self.folder, config.variant, config.encoder, start_policy).to(device)
        self.fingerprint = fingerprint(self.folder)
        prompts, responses, _ = heldout_expert_responses(self.folder, config.drift_sample)
        self.drift_sample = (prompts, responses)

    def identity(self) -> dict:
        """What a checkpoint records of it, so that a resume with another discriminator is refused."""
        return {"path": str(self.folder), "manifest_sha256": self.fingerprint}

    def check_resumed(self, saved: dict | None) -> None:
        if saved and saved.get("manifest_sha256") != self.fingerprint:
            raise ConfigError(
                f"--resume: the run was trained with the discriminator in '{saved.get('path')}' (manifest SHA-256 "
                f"{saved.get('manifest_sha256', '?')[:12]}), but algorithm.anchor.path '{self.folder}' holds another one "
                f"({self.fingerprint[:12]}); resume with the discriminator it was trained with")

    def scores(self, rollouts: tuple[Sequence[str], Sequence[str]], members: tuple[Sequence[str], Sequence[str]]) -> AnchorScores:
        """Of (prompts, responses) of the rollouts and of the expert members."""
        c = self.config
        policy_logits, member_logits = (self.model.score(*rows).cpu() if rows[0] else torch.zeros(0) for rows in (rollouts, members))
        drift = self.model.score(*self.drift_sample).mean().item() if self.drift_sample[0] else None
        return AnchorScores(policy_logits, member_logits, anchoring_reward(policy_logits, c.transform, c.clip),
                            anchoring_reward(member_logits, c.transform, c.clip), c.weight, drift)
