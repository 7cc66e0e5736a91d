"""Fully sharded data parallel: torch's FSDP2 (`fully_shard`), set up from accelerate's launch config.

`accelerate launch --config_file configs/accelerate/fsdp2.yaml -m uniapl train CONFIG` hands its
`fsdp_config` to each process in FSDP_* environment variables; accelerate's FullyShardedDataParallelPlugin
reads them, and `Sharding.shard` applies `fully_shard` to each decoder layer, then to the model. The models
are sharded here rather than by `accelerator.prepare` because accelerate turns FSDP off on a machine without
GPUs, so its path could not be the one the CPU tests run; this one is the same engine on both.

Checkpoints stay full (gathered) tensors in the format of unsharded runs: `full_tensors` gathers a sharded
state one tensor at a time onto the main process, and `placed_like` cuts a full state into the shards of
the running processes, however many there are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from uniapl.errors import UniaplError

FSDP_LAUNCH_FLAG = "ACCELERATE_USE_FSDP"


def is_sharded(module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@dataclass
class Sharding:
    """How `fully_shard` splits a model across the processes."""

    reshard_after_forward: bool | int
    layer_classes: list[str] | None  # fsdp_transformer_layer_cls_to_wrap; None = the model's _no_split_modules
    param_dtype: torch.dtype | None  # the dtype weights are gathered in and passes run in (bf16), None = as stored

    @classmethod
    def from_launch(cls, param_dtype: torch.dtype | None) -> "Sharding | None":
        """The launch config's FSDP settings, or None when the launch did not ask for FSDP."""
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.environment import parse_flag_from_env

        if not parse_flag_from_env(FSDP_LAUNCH_FLAG):
            return None
        plugin = FullyShardedDataParallelPlugin()
        unsupported = {
            "fsdp_version": (plugin.fsdp_version != 2, "2 (FSDP2, torch's fully_shard)"),
            "fsdp_offload_params": (type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy", "false"),
            "fsdp_cpu_ram_efficient_loading": (bool(plugin.cpu_ram_efficient_loading), "false"),
            "fsdp_activation_checkpointing": (bool(plugin.activation_checkpointing),
                                              "false (set model.gradient_checkpointing in the uniapl config instead)"),
        }
        for name, (bad, allowed) in unsupported.items():
            if bad:
                raise UniaplError(f"accelerate launch config: fsdp_config.{name} is not supported by uniapl; set it to {allowed} "
                                  f"(configs/accelerate/fsdp2.yaml, docs/distributed.md)")
        return cls(plugin.reshard_after_forward, plugin.transformer_cls_names_to_wrap, param_dtype)

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shard `model` in place: one FSDP unit per decoder layer, and the root for the rest (embeddings, final
        norm, output layer)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        classes = set(self.layer_classes or getattr(model, "_no_split_modules", None) or [])
        layers = [m for m in model.modules() if type(m).__name__ in classes]
        if not layers:
            raise UniaplError(f"FSDP: no module of {type(model).__name__} is a decoder layer ({', '.join(sorted(classes)) or 'none named'}); "
                              f"name its layer class in the launch config's fsdp_transformer_layer_cls_to_wrap")
        # FSDP warns that a forward returned a view (the kept logits columns), lest an in-place op on it skip a
        # gather; no pass here changes a model's output in place
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        reduce_dtype = torch.float32 if self.param_dtype is not None else None
        policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=reduce_dtype)
        for layer in layers:
            fully_shard(layer, reshard_after_forward=self.reshard_after_forward, mp_policy=policy)
        # the root keeps its weights gathered from its forward to its backward: the chunked output layer reads the
        # output layer's weight after the forward (uniapl.train.lm_head)
        fully_shard(model, reshard_after_forward=False, mp_policy=policy)
        return model


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a sharded one (a collective: every process must call it); a plain one as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_tensors(tensors: dict[str, torch.Tensor], keep: bool, same_as: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Each sharded tensor gathered, one at a time, into a full tensor on the host; the plain ones as they are.
    Every process must call it with the same keys (each gather is a collective); only where `keep` is the
    result kept (the main process), so no process holds more than one full tensor on its device at once.
    `same_as` maps a key to an earlier one that holds the same tensor (tied embeddings), which is gathered once
    and stays shared."""
    same_as = same_as or {}
    out = {}
    for key, value in tensors.items():
        if isinstance(value, DTensor):
            if key in same_as:
                value = out.get(same_as[key])
            else:
                full = value.full_tensor()
                value = full.cpu() if keep else None
        if keep:
            out[key] = value
    return out


def full_state_dict(module: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """`module.state_dict()` of full tensors (see `full_tensors`), tied parameters shared as in the module."""
    first_name: dict[int, str] = {}
    same_as = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first_name:
            same_as[name] = first_name[id(param)]
        else:
            first_name[id(param)] = name
    return full_tensors(module.state_dict(), keep, same_as)


def placed_like(full: torch.Tensor, like) -> torch.Tensor:
    """`full` cut into this process's shard of `like`'s layout (each process holds the full tensor: no
    communication); as it is where `like` is not sharded."""
    if not isinstance(like, DTensor) or full.dim() == 0:
        return full
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool) -> dict:
    """The optimizer's state dict with full tensors (see `full_tensors`); {} where not `keep`."""
    state = optimizer.state_dict()
    flat = {f"{index}.{key}": value for index, fields in state["state"].items() for key, value in fields.items()}
    gathered = full_tensors(flat, keep)
    if not keep:
        return {}
    per_param: dict[int, dict] = {}
    for name, value in gathered.items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    return {"state": per_param, "param_groups": state["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state dict of full tensors, each cut to its parameter's shard."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    placed = {index: {key: placed_like(value, params[index]) if torch.is_tensor(value) else value for key, value in fields.items()}
              for index, fields in state["state"].items()}
    optimizer.load_state_dict({"state": placed, "param_groups": state["param_groups"]})


def load_full_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`module.load_state_dict` of full tensors, each cut to its shard."""
    current = module.state_dict()
    module.load_state_dict({key: placed_like(value, current[key]) if key in current else value for key, value in state.items()})


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite, on every process where they are sharded; one device sync."""
    if not tensors:
        return True
    local = torch.stack([torch.isfinite(t.to_local() if isinstance(t, DTensor) else t).all() for t in tensors]).all()
    sharded = next((t for t in tensors if isinstance(t, DTensor)), None)
    if sharded is not None:
        flag = local.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN, group=sharded.device_mesh.get_group())
        local = flag.bool()
    return bool(local)


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the gradients to a global norm of `max_norm` (sharded ones across every process); their norm before."""
    return float(gathered(torch.nn.utils.clip_grad_norm_(parameters, max_norm)))
