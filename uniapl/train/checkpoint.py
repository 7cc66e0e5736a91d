"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically and verified.

A checkpoint folder `step-NNNNNN` is built under a temporary name, with a manifest of its files' checksums
and the config it was trained with, and renamed into place; `latest` is replaced atomically after that. A
crash during a save therefore leaves the previous checkpoint intact (and a staging folder that the next
start removes). A resume trusts a checkpoint only once its manifest verifies; a damaged one is skipped
for the newest intact one before it, with a warning that says so.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from uniapl.errors import IntegrityError, UniaplWarning
from uniapl.io import read_json, read_text, remove_staging_leftovers, verify_manifest, write_folder_atomically, write_text_atomic

LATEST = "latest"
CONFIG_FILE = "config.yaml"  # the config a checkpoint was trained with, which a resume compares with its own
STEP_FOLDER = re.compile(r"step-\d{6,}")


def optimizer_state_to_files(state: dict, folder: Path, name: str) -> None:
    """An optimizer's state dict as `name.safetensors` (its tensors) and `name.json` (the rest)."""
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(folder / f"{name}.safetensors"))
    write_text_atomic(folder / f"{name}.json", json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_state_from_files(folder: Path, name: str) -> dict:
    meta = read_json(folder / f"{name}.json")
    state: dict = {}
    for key, value in list(load_file(str(folder / f"{name}.safetensors")).items()) + list(meta["scalars"].items()):
        index, field = key.split(".", 1)
        state.setdefault(int(index), {})[field] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict, dict]:
    """(tensors, JSON) for the torch, CUDA, numpy and Python generators of this process."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def restore_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint_folder(root: Path, step: int, fill: Callable[[Path], None], config, keep: int) -> Path:
    """Write `root/step-NNNNNN` through `fill`, with the run's config and a manifest, point `latest` at it, and
    delete the oldest checkpoints beyond `keep`."""
    name = f"step-{step:06d}"

    def fill_with_config(folder: Path) -> None:
        fill(folder)
        (folder / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")

    folder = write_folder_atomically(root / name, fill_with_config, manifest=True)
    write_text_atomic(root / LATEST, name)
    prune(root, keep)
    return folder


def _named_by_latest(root: Path) -> str | None:
    """The folder name `latest` holds, which may only be a checkpoint folder beside it."""
    pointer = root / LATEST
    if not pointer.exists():
        return None
    name = read_text(pointer).strip()
    if not STEP_FOLDER.fullmatch(name):
        raise IntegrityError(f"{pointer}: holds {name[:80]!r}, but it may only name a checkpoint folder beside it (step-NNNNNN); "
                             f"write the name of one of the folders in {root} into it, or delete it to start over")
    return name


def _step_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_FOLDER.fullmatch(p.name)) if root.is_dir() else []


def resume_checkpoint(root: Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names if its manifest verifies, else the newest intact one
    before it (with a warning that says which was skipped and why); None when `latest` does not exist yet."""
    name = _named_by_latest(root)
    if name is None:
        return None
    candidates = [root / name] + [p for p in reversed(_step_folders(root)) if p.name < name]
    problems = []
    for folder in candidates:
        try:
            if not folder.is_dir():
                raise IntegrityError(f"{folder}: missing (named by {root / LATEST})")
            verify_manifest(folder)
        except IntegrityError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warnings.warn(f"checkpoint {name} is damaged ({problems[0]}); resuming from {folder.name}, the newest intact "
                          f"checkpoint before it", UniaplWarning, stacklevel=2)
        return folder
    raise IntegrityError(f"no intact checkpoint to resume from: {'; '.join(problems)}. "
                         f"Delete {root} to start the run over")


def saved_run(output_dir: Path) -> list[str]:
    """What a fresh start in `output_dir` would overwrite: checkpoints, a final model, logged steps."""
    found = []
    if _step_folders(output_dir / "checkpoints"):
        found.append("checkpoints")
    if (output_dir / "final").is_dir():
        found.append("final/")
    metrics = output_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size:
        found.append("metrics.jsonl")
    return found


def remove_interrupted_saves(output_dir: Path) -> None:
    """Remove the staging folders that saves killed part-way left in a run folder, saying how many."""
    removed = [p for folder in (output_dir, output_dir / "checkpoints", output_dir / "stages") for p in remove_staging_leftovers(folder)]
    if removed:
        warnings.warn(f"removed {len(removed)} unfinished save(s) of an interrupted run: {', '.join(p.name for p in removed)}",
                      UniaplWarning, stacklevel=2)


def reapply_lr_schedule(scheduler) -> None:
    """Set the optimizer's lr from the schedule as it is configured now (a resume may raise max_steps), not as it
    was saved: recompute the current step's value."""
    scheduler.last_epoch -= 1
    scheduler.step()


def prune(root: Path, keep: int) -> None:
    """Delete the oldest step-* folders beyond `keep`, never the one `latest` names."""
    current = _named_by_latest(root)
    folders = [p for p in _step_folders(root) if p.name != current]
    for old in folders[: max(len(folders) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)

