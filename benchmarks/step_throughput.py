"""Step throughput of our grpo, our uniapl and TRL's GRPOTrainer on the same settings, side by side.

The prompts are the first `--prompts` rows of the bundled IFEval-style data (data/if_train.jsonl) that carry
a demonstration, the same every step; the reward is `ifeval_partial` (the fraction of a prompt's instructions
that pass IFEval's strict check); uniapl adds one demonstration per prompt (its paired completion). With
`--length fixed` (the default) every rollout of every system runs to `--max-new-tokens`: the systems then
train on the same number of tokens, which the comparison needs (a step's cost is linear in its tokens, and
the three samplers end their rollouts at different places). TRL gets `min_new_tokens`; ours decodes with an
EOS set that no token matches. `--length natural` lets rollouts stop at EOS.

Each system runs in its own subprocess, so that each peak memory is its own. The parent prints one table
with each system's split of a step: generation, scoring, first pass (no-grad passes before the loss),
backward (the passes with gradients) and optimizer. A quick check of the script:
`--model tiny-random-smollm2 --steps 1 --max-new-tokens 8 --prompts 2 --generations 2`.

    python benchmarks/step_throughput.py                      # all three, the issue's settings
    python benchmarks/step_throughput.py --only ours-grpo     # one system, prints a RESULT line

`ours-uniapl-fsdp2` (not in the default `--systems`) is our uniapl as one process under FSDP2 (accelerate's
launcher with configs/accelerate/fsdp2.yaml): beside `ours-uniapl`, what FSDP2's bookkeeping costs on one device.

`ours-grpo-aapa` (not in the default `--systems`) is our grpo with AAPA's anchoring reward from the discriminator
folder `--anchor`; without one, a minilm discriminator is trained first with `uniapl discriminator train` on the
first `--anchor-demos` demonstrations of `--data` against the model's own samples at these rollout settings, and
kept in runs/bench/ for later runs. What it costs beside `ours-grpo` is the anchoring reward's price:

    python benchmarks/step_throughput.py --systems ours-grpo,ours-grpo-aapa

A system named `...-vllm` draws its rollouts from vLLM (`rollout.engine: vllm`; TRL's `use_vllm` in its colocate
mode), in the environment `bash scripts/setup.sh --vllm` makes (.venv-vllm; TRL goes in with
`.venv-vllm/bin/pip install --no-deps trl==1.16.0`):

    python benchmarks/step_throughput.py --systems ours-grpo,ours-grpo-vllm,ours-uniapl-vllm,trl-grpo,trl-grpo-vllm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEMS = ("ours-grpo", "ours-uniapl", "trl-grpo")
OPTIONAL_SYSTEMS = ("ours-uniapl-fsdp2", "ours-grpo-aapa", "ours-grpo-vllm", "ours-uniapl-vllm", "trl-grpo-vllm")
VLLM = "-vllm"  # a system name's suffix: rollouts from vLLM, in the vLLM environment
FSDP2 = "-fsdp2"  # a system name's suffix: that system as one process under FSDP2
FSDP2_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(Path(__file__).resolve().parent.parent / "configs" / "accelerate" / "fsdp2.yaml"), "--num_processes", "1"]
PHASES = ("generation", "scoring", "first_pass", "backward", "optimizer")
RESULT_PREFIX = "RESULT "
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "if_train.jsonl"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def parse_args(argv: list[str] | None = None, defaults: dict | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=SYSTEMS + OPTIONAL_SYSTEMS, help="run one system in this process and print its RESULT line")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems to run, one subprocess each")
    p.add_argument("--steps", type=int, default=5, help="timed steps, after 1 warm-up step")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (the same prompts every step)")
    p.add_argument("--generations", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--length", choices=("fixed", "natural"), default="fixed",
                   help="fixed: every rollout runs to --max-new-tokens (equal lengths across systems); natural: rollouts stop at EOS")
    p.add_argument("--data", default=str(DATA), help="JSONL rows with prompt, instruction_id_list, kwargs and completion")
    p.add_argument("--model", default="smollm2-135m-instruct", help="a uniapl alias or a local HF folder")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--micro-batch-size", type=int, default=None, help="ours: rows per forward/backward (default: all at once)")
    p.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL with gradient checkpointing (as in the H200 anchor)")
    p.add_argument("--threads", type=int, help="torch CPU threads per system (default: torch's); 1 avoids spin-waiting on a shared CPU")
    p.add_argument("--json-out", help="also write the parent's results to this JSON file")
    p.add_argument("--anchor", help="ours-grpo-aapa: a discriminator folder (default: one trained first, kept in runs/bench/)")
    p.add_argument("--anchor-variant", default="minilm", choices=("minilm", "policy", "ngram"), help="the discriminator it trains")
    p.add_argument("--anchor-demos", type=int, default=64, help="the demonstrations it trains on (default: %(default)s)")
    if defaults:
        p.set_defaults(**defaults)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    if not 1 <= args.prompts <= len(dataset_rows(args.data, None)):
        p.error(f"--prompts must be in [1, the {len(dataset_rows(args.data, None))} rows of {args.data} with a completion]")
    return args


def dataset_rows(path: str, n_prompts: int | None) -> list[dict]:
    """The first n rows that carry a demonstration: conversational prompt, IFEval columns and completion."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    keep = ("prompt", "instruction_id_list", "kwargs", "completion")
    return [{k: r[k] for k in keep} for r in rows if "completion" in r][:n_prompts]


def peak_memory_mb(device: str) -> float:
    """Peak CUDA allocation on a GPU; else this process's peak RSS (ru_maxrss is in KiB on Linux)."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(step_times: list[float], lengths: list[float], n_sequences: int, phases: dict[str, list[float]]) -> dict:
    """Median s/step and total tokens / total time over the timed steps (the first step is the warm-up)."""
    timed, timed_lengths = step_times[1:], lengths[1:]
    tokens = sum(length * n_sequences for length in timed_lengths)
    return {
        "step_s_all": [round(t, 2) for t in step_times],
        "median_step_s": statistics.median(timed),
        "completion_tok_per_s": tokens / sum(timed),
        "mean_completion_len": statistics.mean(timed_lengths),
        **{f"median_{k}_s": statistics.median(v[1:]) for k, v in phases.items()},
    }


def run_ours(algorithm: str, engine: str, args: argparse.Namespace, device: str) -> dict:
    from uniapl import UniAPLConfig, UniAPLTrainer
    from uniapl.rewards.ifeval import ifeval_partial

    if args.length == "fixed":
        import uniapl.generation.engines as engines
        import uniapl.generation.vllm_engine as vllm_engine

        # no token ends a rollout: each runs to max_new_tokens (vLLM also stops at the config's EOS unless told not to)
        engines.eos_token_ids = lambda model, tokenizer: [-1]
        vllm_engine.eos_token_ids = lambda model, tokenizer: []
        sampling_params = vllm_engine.VLLMEngine._sampling_params

        def ignoring_eos(engine, params, seed):
            vllm_params = sampling_params(engine, params, seed)
            vllm_params.ignore_eos = True
            return vllm_params

        vllm_engine.VLLMEngine._sampling_params = ignoring_eos

    rows = dataset_rows(args.data, args.prompts)
    with tempfile.TemporaryDirectory(prefix="bench-uniapl-") as out:
        config = UniAPLConfig.from_dict(
            {
                "model": {"name": args.model, "dtype": args.dtype},
                "rewards": [{"name": "ifeval_partial"}],
                "rollout": {"num_generations": args.generations, "max_new_tokens": args.max_new_tokens,
                            "temperature": 1.0, "top_p": 1.0, "top_k": 0, "engine": engine},
                "algorithm": {"name": algorithm, "beta_kl": 0.0, "anchor": {"path": args.anchor}},
                "training": {"prompts_per_step": args.prompts, "demos_per_step": args.prompts, "max_steps": args.steps + 1,
                             "learning_rate": 1e-6, "seed": args.seed, "tensorboard": False, "progress": False,
                             "micro_batch_size": args.micro_batch_size, "output_dir": out},
            }
        )
        # a callable, not the name: name resolution imports every built-in reward module
        UniAPLTrainer(reward_funcs=[ifeval_partial], args=config, train_dataset=rows).train()
        metrics = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = summarize([m["time/step"] for m in metrics], [m["length/mean"] for m in metrics], args.prompts * args.generations,
                       {phase: [m[f"time/{phase}"] for m in metrics] for phase in PHASES})
    result["demos_per_step"] = args.prompts if algorithm == "uniapl" else 0
    return result


def run_trl(args: argparse.Namespace, device: str, use_vllm: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from uniapl.models import resolve_model_path
    from uniapl.rewards.ifeval import ifeval_partial

    def ifeval_partial_reward(prompts, completions, instruction_id_list, kwargs_json, **_):
        """ifeval_partial on the instruction arguments, kept as JSON: an Arrow column would merge their keys."""
        return ifeval_partial(prompts, completions, instruction_id_list, [json.loads(k) for k in kwargs_json])

    step_times: list[float] = []
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()
            for phase in PHASES:
                phases[phase].append(0.0)

        def on_pre_optimizer_step(self, *_, **__):
            self.optimizer_start = time.perf_counter()

        def on_optimizer_step(self, *_, **__):
            phases["optimizer"][-1] += time.perf_counter() - self.optimizer_start

        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter() - self.start)
            # what is left of the step: its forward and backward passes
            phases["backward"][-1] = step_times[-1] - sum(phases[p][-1] for p in PHASES if p != "backward")

    def timed(method, phase: str, minus: tuple[str, ...] = ()):
        """Add each call's wall time to the current step's `phase`, less the phases timed inside it."""

        def wrapper(*a, **kw):
            start, inner = time.perf_counter(), sum(phases[p][-1] for p in minus)
            try:
                return method(*a, **kw)
            finally:
                phases[phase][-1] += time.perf_counter() - start - (sum(phases[p][-1] for p in minus) - inner)

        return wrapper

    rows = dataset_rows(args.data, args.prompts)
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        # the same knob under each generator: transformers' GenerationConfig, or vLLM's SamplingParams
        generation_kwargs = {"min_tokens" if use_vllm else "min_new_tokens": args.max_new_tokens} if args.length == "fixed" else None
        # on a CPU vLLM's "GPU memory" share is of the RAM, for its KV cache: 0.15 of 24 GB holds the step's rollouts
        vllm = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.15} if use_vllm else {}
        config = GRPOConfig(
            output_dir=out, use_cpu=device == "cpu", bf16=args.dtype == "bf16",
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_completion_length=args.max_new_tokens, max_steps=args.steps + 1, learning_rate=1e-6, beta=0.0,
            temperature=1.0, top_p=1.0, top_k=0, gradient_checkpointing=args.trl_gradient_checkpointing, report_to=[], logging_steps=1,
            save_strategy="no", disable_tqdm=True, seed=args.seed, generation_kwargs=generation_kwargs, **vllm,
        )
        train = [{"prompt": r["prompt"], "instruction_id_list": r["instruction_id_list"], "kwargs_json": json.dumps(r["kwargs"])}
                 for r in rows]
        trainer = GRPOTrainer(
            model=resolve_model_path(args.model), reward_funcs=ifeval_partial_reward, args=config,
            train_dataset=Dataset.from_list(train), callbacks=[Clock()],
        )
        trainer._generate = timed(trainer._generate, "generation")
        trainer._calculate_rewards = timed(trainer._calculate_rewards, "scoring")
        # the rest of preparing a batch: tokenizing, and any old or reference log-probs (no-grad passes)
        trainer._generate_and_score_completions = timed(trainer._generate_and_score_completions, "first_pass",
                                                        minus=("generation", "scoring"))
        trainer.train()
        lengths = [log["completions/mean_length"] for log in trainer.state.log_history if "completions/mean_length" in log]
    return summarize(step_times, lengths, args.prompts * args.generations, phases)


def run_one(args: argparse.Namespace) -> None:
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    use_vllm = args.only.endswith(VLLM)
    if args.only.startswith("trl-"):
        result = run_trl(args, device, use_vllm)
    else:
        algorithm = args.only.removeprefix("ours-").removesuffix(FSDP2).removesuffix(VLLM).replace("-", "_")
        result = run_ours(algorithm, "vllm" if use_vllm else "auto", args, device)
    result.update(
        system=args.only, device=device, peak_memory_mb=peak_memory_mb(device), torch=torch.__version__,
        transformers=transformers.__version__, threads=torch.get_num_threads(),
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_command(system: str, args: argparse.Namespace, script: str, extra: list[str]) -> list[str]:
    if system.endswith(VLLM) and not VLLM_PYTHON.exists():
        raise SystemExit(f"{system} runs in {VLLM_PYTHON.parent.parent}: set it up with `bash scripts/setup.sh --vllm`")
    python = str(VLLM_PYTHON) if system.endswith(VLLM) else sys.executable
    command = [*(FSDP2_LAUNCH if system.endswith(FSDP2) else [python]), script, "--only", system, *extra]
    for flag in ("steps", "prompts", "generations", "max_new_tokens", "length", "data", "model", "dtype", "device", "seed",
                 "threads", "micro_batch_size", "anchor"):
        value = getattr(args, flag)
        if value is not None:
            command += ["--" + flag.replace("_", "-"), str(value)]
    return command + (["--trl-gradient-checkpointing"] if args.trl_gradient_checkpointing else [])


def trained_anchor(args: argparse.Namespace, env: dict) -> str:
    """A discriminator for ours-grpo-aapa, trained once at the benchmark's rollout settings and kept."""
    folder = ROOT / "runs" / "bench" / f"aapa-{args.anchor_variant}-{Path(args.model).name}-{args.anchor_demos}demos-{args.max_new_tokens}tok"
    if not (folder / "discriminator.json").exists():
        subprocess.run([sys.executable, "-m", "uniapl", "discriminator", "train", "--data", args.data, "--limit", str(args.anchor_demos),
                        "--variant", args.anchor_variant, "--out", str(folder), "--set", f"model.name={args.model}",
                        "--set", f"model.dtype={args.dtype}", "--set", f"rollout.max_new_tokens={args.max_new_tokens}",
                        "--set", f"training.seed={args.seed}"], env=env, check=True)
    return str(folder)


def run_children(args: argparse.Namespace, script: str, extra: list[str]) -> list[dict]:
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # our trainer uses a GPU whenever it sees one
    if "ours-grpo-aapa" in args.systems.split(",") and not args.anchor:
        args.anchor = trained_anchor(args, env)
    results = []
    for system in args.systems.split(","):
        print(f"== {system}", flush=True)
        proc = subprocess.run(child_command(system, args, script, extra), env=env, stdout=subprocess.PIPE, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode or not lines:
            print(proc.stdout[-4000:], flush=True)
            raise SystemExit(f"{system} failed with exit code {proc.returncode}")
        result = json.loads(lines[-1][len(RESULT_PREFIX):])
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    memory = "peak CUDA MiB" if results[0]["device"] == "cuda" else "peak RSS MiB"
    print(f"\nmodel {args.model}, {args.dtype}, {results[0]['device']}, {args.prompts} prompts x {args.generations} rollouts, "
          f"ours in micro-batches of {args.micro_batch_size or 'all'} rows, TRL {'with' if args.trl_gradient_checkpointing else 'without'} "
          f"gradient checkpointing, "
          f"{args.max_new_tokens} new tokens ({args.length} length), beta 0, ifeval_partial reward, prompts of {Path(args.data).name}; "
          f"uniapl B_E = {args.prompts} demos/step; median of {args.steps} steps after 1 warm-up; {results[0]['threads']} torch "
          f"threads; torch {results[0]['torch']}, transformers {results[0]['transformers']}")
    print(f"| system | s/step (median) | completion tok/s | mean completion len | {' s | '.join(PHASES)} s | {memory} | all steps (s) |")
    print("|---|---|---|---|" + "---|" * len(PHASES) + "---|---|")
    for r in results:
        split = " | ".join(f"{r[f'median_{phase}_s']:.3f}" for phase in PHASES)
        print(f"| {r['system']} | {r['median_step_s']:.2f} | {r['completion_tok_per_s']:.1f} | {r['mean_completion_len']:.1f} | "
              f"{split} | {r['peak_memory_mb']:.0f} | {', '.join(map(str, r['step_s_all']))} |")


def main(argv: list[str] | None = None, defaults: dict | None = None, script: str = os.path.abspath(__file__),
         child_args: tuple[str, ...] = ()) -> list[dict] | None:
    """Parse, then run one system (--only) or all of them as children: `script child_args --only SYSTEM ...`,
    which must parse the same way."""
    args = parse_args(argv, defaults)
    if args.only:
        run_one(args)
        return None
    results = run_children(args, script, list(child_args))
    print_table(results, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
