"""Per-step metrics: JSONL (one object per optimizer step), TensorBoard events and a progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    def __init__(self, output_dir: Path, tensorboard: bool, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = output_dir / METRICS_FILE
        self.writer = None
        if not enabled:
            return
        self._drop_rows_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def _drop_rows_after(self, step: int) -> None:
        """A resumed run rewrites the steps after its checkpoint; keep the rows before it, drop the rest."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def progress(self, total: int, initial: int, enabled: bool) -> "Progress":
        return Progress(total, initial, enabled)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """tqdm bar with step, ETA and the numbers a user watches: reward, lambda, discriminator accuracy, tok/s."""

    FIELDS = {"reward/mean": "reward", "lambda": "lambda", "c_batch": "C", "disc/acc_policy": "disc_acc", "perf/tokens_per_s": "tok/s"}

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)

    def update(self, metrics: dict) -> None:
        shown = {label: f"{metrics[key]:.3g}" for key, label in self.FIELDS.items() if isinstance(metrics.get(key), (int, float))}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
