"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint folder is built under a temporary name and renamed into place; `latest` is replaced
atomically after that. A crash during a save therefore leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from uniapl.errors import UniaplError

LATEST = "latest"


def optimizer_to_files(optimizer: torch.optim.Optimizer, folder: Path, name: str) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path, name: str) -> None:
    meta = json.loads((folder / f"{name}.json").read_text())
    state: dict = {}
    for key, value in list(load_file(str(folder / f"{name}.safetensors")).items()) + list(meta["scalars"].items()):
        index, field = key.split(".", 1)
        state.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


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


def write_atomically(root: Path, name: str, fill) -> Path:
    """Build `root/name` through `fill(staging_folder)`, then rename it into place."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        fill(staging)
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def mark_latest(root: Path, name: str) -> None:
    """Point `latest` at a finished checkpoint, replacing the pointer in one atomic step."""
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / LATEST)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    if not folder.is_dir():
        raise UniaplError(f"'{pointer}' names '{folder.name}', which does not exist; delete '{pointer}' to start over")
    return folder


def prune(root: Path, keep: int) -> None:
    """Delete the oldest step-* folders beyond `keep`, never the one `latest` names."""
    current = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    folders = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != current)
    for old in folders[: max(len(folders) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
