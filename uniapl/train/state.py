"""What a checkpoint saves of the loop besides tensors, in `trainer_state.json`: read once, at a resume."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from uniapl.io import read_json

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where the run is (step, stage, the positions in both data streams), and the state of what is not a tensor:
    the multiplier, the lr schedule, the dtype the run trains in, the JSON half of the RNG states."""

    global_step: int = 0
    stage_index: int = 0
    stage_step: int = 0
    prompt_cursor: int = 0
    demo_cursor: int = 0
    multiplier: dict = field(default_factory=dict)  # Multiplier.state_dict()
    scheduler: dict = field(default_factory=dict)
    dtype: str | None = None  # None in checkpoints saved before it was recorded
    anchor: dict | None = None  # AAPA's discriminator: its folder and manifest checksum (FrozenAnchor.identity)
    engine: str | None = None  # the rollout engine that sampled (resolved from `auto`)
    rng: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "TrainerState":
        raw = read_json(folder / STATE_FILE)
        if "multiplier" not in raw:  # saved before the multiplier had a state of its own
            raw["multiplier"] = {"lambda": raw.pop("lambda"), "c_ema": raw.pop("c_ema")}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})
