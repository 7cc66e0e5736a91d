"""The memory each training layout holds per process: one process, DDP, and FSDP2 (docs/distributed.md).

Computed: for Qwen3-0.6B and Qwen3-4B (random-init configs of their architectures, counted on the meta device),
from what each layout holds per process: the fp32 weights, their gradients and AdamW's two moments (whole under
DDP, 1/N of each under FSDP2 over N processes), the bf16 rollout copy (whole in both), and with beta_kl > 0 the
fp32 reference model (whole, or 1/N). Under FSDP2 a pass also gathers the root (embeddings, final norm) and a
decoder layer or two at a time, in bf16.

Measured: the same sums, from the tensors each process holds after one uniapl step in bf16 with a reference
model (beta_kl 0.1), of a random-init Qwen3 with 0.6B's widths and vocabulary and `--layers` of its 28 layers,
run as one process, as DDP and as FSDP2 on 2 CPU processes (gloo); and each process's peak resident memory.
The gradients are counted as the trainable weights' size: they are freed (set to None) after each update.

    python benchmarks/memory_layouts.py                     # computed and measured (under 2 minutes on 2 cores)
    python benchmarks/memory_layouts.py --computed-only     # the table for 0.6B and 4B only, in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128)
LAYOUTS = {
    "one process": [sys.executable],
    "DDP, 2 processes": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29561"],
    "FSDP2, 2 processes": [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"), "--main_process_port", "29562"],
}
PARTS = ("weights", "gradients", "optimizer", "rollout copy", "reference")
GB = 1e9


def parameter_counts(**changed_sizes) -> dict[str, int]:
    """Parameters of a Qwen3 config: all of them, those outside the decoder layers (the root), one layer's."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(gpu_step.qwen3_config(False, **changed_sizes))
    total = sum(p.numel() for p in model.parameters())
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    return {"total": total, "root": total - layer * len(model.model.layers), "layer": layer}


def computed_bytes(counts: dict[str, int], processes: int, sharded: bool, reference: bool) -> dict[str, float]:
    """Bytes per process of each part, in bf16 training (fp32 master weights, bf16 rollout copy)."""
    share = 1 / processes if sharded else 1.0
    total = counts["total"]
    parts = {"weights": 4 * total * share, "gradients": 4 * total * share, "optimizer": 8 * total * share,
             "rollout copy": 2 * total, "reference": 4 * total * share if reference else 0.0}
    # gathered during a pass: the root for the whole pass, and the current and the next (prefetched) layer
    parts["gathered in a pass"] = 2 * (counts["root"] + 2 * counts["layer"]) if sharded else 0.0
    return parts


def computed_table() -> str:
    rows = ["| model | parameters | layout | weights + gradients + AdamW | rollout copy (bf16) | reference (beta_kl > 0) | "
            "gathered in a pass (bf16) | total |", "|---|---|---|---|---|---|---|---|"]
    for name, sizes in (("Qwen3-0.6B", {}), ("Qwen3-4B", QWEN3_4B)):
        counts = parameter_counts(**sizes)
        for layout, processes, sharded in (("DDP, any N", 1, False), ("FSDP2, N = 2", 2, True), ("FSDP2, N = 4", 4, True),
                                           ("FSDP2, N = 8", 8, True)):
            p = computed_bytes(counts, processes, sharded, reference=True)
            state = p["weights"] + p["gradients"] + p["optimizer"]
            rows.append(f"| {name} | {counts['total'] / 1e9:.3f}B | {layout} | {state / GB:.1f} GB | {p['rollout copy'] / GB:.1f} GB | "
                        f"{p['reference'] / GB:.1f} GB | {p['gathered in a pass'] / GB:.2f} GB | {sum(p.values()) / GB:.1f} GB |")
    return "\n".join(rows)


# ---- measured --------------------------------------------------------------------------------------------------


def local_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor

    return sum((t.to_local() if isinstance(t, DTensor) else t).untyped_storage().nbytes() for t in tensors)


def measure_in_this_process(model: str, data: Path, out: Path) -> None:
    """One uniapl step; this process's held bytes, as JSON in `out/rank{N}.json`."""
    from uniapl import UniAPLConfig, UniAPLTrainer

    config = UniAPLConfig.from_yaml(None, [
        f"model.name={model}", "model.dtype=bf16", f"data.prompts={data}", "rewards=[{name: no_commas}]", "algorithm.name=uniapl",
        "algorithm.beta_kl=0.1", "rollout.max_new_tokens=8", "rollout.num_generations=2", "training.prompts_per_step=2",
        "training.demos_per_step=2", "training.max_steps=1", "training.progress=false", "training.tensorboard=false",
        f"training.output_dir={out / 'run'}"])
    trainer = UniAPLTrainer(args=config)
    trainer.train()
    policy = trainer.models.unwrapped()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer_state = [v for state in trainer._raw_optimizer().state.values() for v in state.values() if v.dim() > 0]
    held = {
        "weights": local_bytes(policy.parameters()),
        "gradients": local_bytes(trainable),
        "optimizer": local_bytes(optimizer_state),
        "rollout copy": local_bytes(trainer.models.rollout_model.parameters()) if trainer.models.rollout_model is not policy else 0,
        "reference": local_bytes(trainer.models.ref_model.parameters()) if trainer.models.ref_model is not None else 0,
        "peak resident": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    (out / f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(held))


def measured_table(layers: int) -> str:
    model = gpu_step.model_folder(False, num_hidden_layers=layers)
    counts = parameter_counts(num_hidden_layers=layers)
    rows = [f"Qwen3 with 0.6B's widths and {layers} layers ({counts['total'] / 1e6:.1f}M parameters), one uniapl step, bf16, "
            f"beta_kl 0.1; per process, measured (computed):", "",
            "| layout | " + " | ".join(PARTS) + " | sum | peak resident |", "|---|" + "---|" * (len(PARTS) + 2)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"Name a word like {w}.", "completion": f"{w.title()}."}) + "\n"
                                for w in ("sun", "rain", "tree", "stone")))
        for layout, launcher in LAYOUTS.items():
            out = Path(tmp) / layout.split(",")[0].replace(" ", "_")
            out.mkdir()
            command = [*launcher, str(Path(__file__).resolve()), "--measure-into", str(out), "--model", model, "--data", str(data)]
            result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"{layout} failed:\n{result.stderr[-3000:]}")
            held = json.loads((out / "rank0.json").read_text())
            expected = computed_bytes(counts, 2, layout.startswith("FSDP2"), reference=True)
            cells = [f"{held[part] / GB:.3f} ({expected[part] / GB:.3f}) GB" for part in PARTS]
            total = sum(held[part] for part in PARTS)
            rows.append(f"| {layout} | " + " | ".join(cells) + f" | {total / GB:.2f} GB | {held['peak resident'] / GB:.2f} GB |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--computed-only", action="store_true", help="only the computed table for 0.6B and 4B")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the measured model (Qwen3-0.6B has 28)")
    parser.add_argument("--measure-into", type=Path, help=argparse.SUPPRESS)  # a layout's process: measure, write JSON
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_into:
        measure_in_this_process(args.model, args.data, args.measure_into)
        return
    print(computed_table())
    if not args.computed_only:
        print()
        print(measured_table(args.layers))


if __name__ == "__main__":
    main()
