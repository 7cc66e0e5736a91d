"""Per-step metrics: JSONL (one object per optimizer step), TensorBoard events and a progress bar.

Non-finite values are written as what they are (NaN, Infinity, -Infinity, which Python's json and pandas
read back), never as null: a NaN loss must show in the file.
"""

from __future__ import annotations

from pathlib import Path

from uniapl.errors import DataError
from uniapl.io import append_jsonl, jsonl_rows, repair_last_line, write_jsonl_atomic

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
        """A resumed run rewrites the steps after its checkpoint: keep the rows up to it, drop the rest (and a
        half-written last line, from a kill during an append)."""
        if not self.path.exists():
            return
        repair_last_line(self.path)
        numbered = list(jsonl_rows(self.path))
        for where, row in numbered:
            if not isinstance(row.get("step"), int):
                raise DataError(f"{where}: the row has no integer 'step'; this is not a metrics file uniapl wrote")
        kept = [row for _, row in numbered if row["step"] <= step]
        if len(kept) != len(numbered):
            write_jsonl_atomic(self.path, kept)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, [{"step": step, **metrics}])
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
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
