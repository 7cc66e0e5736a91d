"""Step throughput of our grpo, our uniapl and TRL's GRPOTrainer on the same settings.

Each system runs in its own subprocess, so that each peak RSS (process-wide) is its own. The parent
prints one table. A quick check of the script: `--model tiny-random-smollm2 --steps 2`.

    python benchmarks/step_throughput.py                      # all three, the issue's settings
    python benchmarks/step_throughput.py --only ours-grpo     # one system, prints a RESULT line
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
RESULT_PREFIX = "RESULT "

# (instruction, short comma-free expert answer): the answers are the demonstrations uniapl needs
PROMPTS: list[tuple[str, str]] = [
    ("Write a short poem about the sea.", "Waves roll in and fold back out.\nThe sea keeps time for all of us."),
    ("Describe a sunrise over a city.", "Light spills over the towers and the streets wake up in gold."),
    ("Give three tips for better sleep.", "Keep a fixed bedtime.\nAvoid screens late at night.\nKeep the room cool and dark."),
    ("Explain what a rainbow is.", "A rainbow is sunlight split into its colours by drops of rain."),
    ("Write a haiku about autumn.", "Red leaves drift and fall\nthe cold wind hums through bare trees\nthe year breathes out slow"),
    ("Tell me a fun fact about octopuses.", "An octopus has three hearts and blue blood."),
    ("Write a two-sentence horror story.", "I heard my mother call me from the kitchen. Then she whispered from the closet that she heard it too."),
    ("Summarize the plot of Cinderella.", "A kind young woman meets a prince at a ball with help from magic and he finds her again by a lost glass slipper."),
    ("Describe your ideal weekend.", "A slow breakfast and a long walk in the hills and a good book in the evening."),
    ("Write a thank-you note to a teacher.", "Thank you for your patience and your care. Your lessons will stay with me for years."),
    ("Explain why the sky is blue.", "Air scatters blue light more than red light so the sky looks blue to us."),
    ("Write a product description for a water bottle.", "This steel bottle keeps drinks cold for a full day and fits in any bag."),
    ("Give advice to a new programmer.", "Write small programs often and read the error messages with care."),
    ("Describe a busy market.", "Stalls overflow with fruit and spices while traders call out their prices."),
    ("Write a limerick about a cat.", "A cat with a taste for the cream\nwould plot and would purr and would scheme\nshe crept to the jug\nthen lapped it all up\nand slept in a warm sunny beam"),
    ("Explain how a bicycle works.", "Your legs turn the pedals and a chain carries that turn to the back wheel."),
    ("Write a short story opening.", "The letter arrived ten years late and it was addressed to a girl who no longer existed."),
    ("Describe the taste of chocolate.", "Chocolate tastes rich and sweet with a gentle bitter edge that melts away."),
    ("Give a motivational quote and explain it.", "Small steps every day add up. Progress comes from showing up again and again."),
    ("Write a weather report for a snowy day.", "Expect heavy snow all day with strong winds and temperatures below zero."),
    ("Explain photosynthesis simply.", "Plants use sunlight to turn water and air into sugar and they release oxygen."),
    ("Write a birthday message for a friend.", "Happy birthday to you! I hope this year brings you joy and many adventures."),
    ("Describe a forest at night.", "Owls call from dark branches and the cool air smells of moss and pine."),
    ("List three uses for a paperclip.", "Hold papers together.\nReset a small device.\nMark a page in a book."),
    ("Write a short dialogue between two robots.", "Unit A: Are you charged?\nUnit B: Fully. Shall we sweep the hall?\nUnit A: After you."),
    ("Explain what gravity does.", "Gravity pulls things toward each other and keeps our feet on the ground."),
    ("Write an apology for being late.", "I am sorry I kept you waiting. I will leave earlier next time."),
    ("Describe a perfect cup of tea.", "Hot and strong with a splash of milk and served in a warm mug."),
    ("Write a riddle and its answer.", "What has keys but opens no locks? A piano."),
    ("Explain why we need sleep.", "Sleep lets the body repair itself and helps the brain store memories."),
    ("Write a short review of a movie you like.", "The film is warm and funny and its final scene stays with you for days."),
    ("Describe a mountain view.", "Snowy peaks rise above green valleys under a wide blue sky."),
    ("Write a slogan for a bakery.", "Fresh bread every morning baked with love."),
    ("Explain how to boil an egg.", "Place the egg in boiling water for nine minutes and then cool it in cold water."),
    ("Write a short letter to your future self.", "Dear me. I hope you kept learning and stayed kind. Remember to rest."),
    ("Describe the sound of rain.", "Rain taps on the roof in a soft steady rhythm that calms the mind."),
    ("Write a tweet about learning to cook.", "Made my first loaf of bread today and the kitchen smells amazing!"),
    ("Explain what a volcano is.", "A volcano is an opening in the ground where melted rock escapes from deep below."),
    ("Write a short speech for a graduation.", "Today we celebrate hard work. Go out and build the future you believe in."),
    ("Describe your favourite animal.", "The otter is my favourite. It plays all day and holds hands while it sleeps."),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=SYSTEMS, help="run one system in this process and print its RESULT line")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems to run, one subprocess each")
    p.add_argument("--steps", type=int, default=5, help="timed steps, after 1 warm-up step")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (the same prompts every step)")
    p.add_argument("--generations", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--model", default="smollm2-135m-instruct", help="a uniapl alias or a local HF folder")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--micro-batch-size", type=int, default=None, help="ours: rows per forward/backward (default: all at once)")
    p.add_argument("--threads", type=int, help="torch CPU threads per system (default: torch's); 1 avoids spin-waiting on a shared CPU")
    p.add_argument("--json-out", help="also write the parent's results to this JSON file")
    args = p.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        p.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def dataset_rows(n_prompts: int) -> list[dict]:
    """Conversational rows: the same n prompts every step, each with its comma-free demonstration."""
    return [
        {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
        for q, a in PROMPTS[:n_prompts]
    ]


def peak_memory_mb(device: str) -> float:
    """Peak CUDA allocation on a GPU; else this process's peak RSS (ru_maxrss is in KiB on Linux)."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summarize(step_times: list[float], lengths: list[float], n_sequences: int, extra: dict[str, list[float]]) -> dict:
    """Median s/step and total tokens / total time over the timed steps (the first step is the warm-up)."""
    timed, timed_lengths = step_times[1:], lengths[1:]
    tokens = sum(length * n_sequences for length in timed_lengths)
    return {
        "step_s_all": [round(t, 2) for t in step_times],
        "median_step_s": statistics.median(timed),
        "completion_tok_per_s": tokens / sum(timed),
        "mean_completion_len": statistics.mean(timed_lengths),
        **{f"median_{k}_s": statistics.median(v[1:]) for k, v in extra.items()},
    }


def run_ours(algorithm: str, args: argparse.Namespace, device: str) -> dict:
    from uniapl import UniAPLConfig, UniAPLTrainer
    from uniapl.rewards.builtin import no_commas

    with tempfile.TemporaryDirectory(prefix="bench-uniapl-") as out:
        config = UniAPLConfig.from_dict(
            {
                "model": {"name": args.model, "dtype": args.dtype},
                # validation asks for a reward here even when reward_funcs below replaces it
                "rewards": [{"name": "no_commas"}],
                "rollout": {"num_generations": args.generations, "max_new_tokens": args.max_new_tokens,
                            "temperature": 1.0, "top_p": 1.0, "top_k": 0},
                "algorithm": {"name": algorithm, "beta_kl": 0.0},
                "training": {"prompts_per_step": args.prompts, "demos_per_step": args.prompts, "max_steps": args.steps + 1,
                             "learning_rate": 1e-6, "seed": args.seed, "tensorboard": False, "progress": False,
                             "micro_batch_size": args.micro_batch_size, "output_dir": out},
            }
        )
        # a callable, not the name: name resolution imports every built-in reward module
        UniAPLTrainer(reward_funcs=[no_commas], args=config, train_dataset=dataset_rows(args.prompts)).train()
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = summarize(
        [r["time/step"] for r in rows],
        [r["length/mean"] for r in rows],
        args.prompts * args.generations,
        {key: [r[f"time/{key}"] for r in rows] for key in ("generation", "scoring", "training")},
    )
    result["demos_per_step"] = args.prompts
    return result


def run_trl(args: argparse.Namespace, device: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from uniapl.models import resolve_model_path
    from uniapl.rewards.builtin import no_commas

    step_times: list[float] = []
    phase_times: dict[str, list[float]] = {"generation": [], "scoring": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter() - self.start)

    def timed(method, phase: str):
        """Wrap a bound method of the trainer so that each call's wall time lands in phase_times."""

        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                phase_times[phase].append(time.perf_counter() - start)

        return wrapper

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        config = GRPOConfig(
            output_dir=out, use_cpu=device == "cpu", bf16=args.dtype == "bf16",
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_completion_length=args.max_new_tokens, max_steps=args.steps + 1, learning_rate=1e-6, beta=0.0,
            temperature=1.0, top_p=1.0, top_k=0, gradient_checkpointing=False, report_to=[], logging_steps=1,
            save_strategy="no", disable_tqdm=True, seed=args.seed,
        )
        prompts_only = [{"prompt": row["prompt"]} for row in dataset_rows(args.prompts)]
        trainer = GRPOTrainer(
            model=resolve_model_path(args.model), reward_funcs=no_commas, args=config,
            train_dataset=Dataset.from_list(prompts_only), callbacks=[StepTimer()],
        )
        trainer._generate = timed(trainer._generate, "generation")
        trainer._calculate_rewards = timed(trainer._calculate_rewards, "scoring")
        trainer.train()
        lengths = [log["completions/mean_length"] for log in trainer.state.log_history if "completions/mean_length" in log]
    training = [s - g - r for s, g, r in zip(step_times, phase_times["generation"], phase_times["scoring"])]
    return summarize(step_times, lengths, args.prompts * args.generations, {**phase_times, "training": training})


def run_one(args: argparse.Namespace) -> None:
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = run_trl(args, device) if args.only == "trl-grpo" else run_ours(args.only.removeprefix("ours-"), args, device)
    result.update(
        system=args.only, device=device, peak_memory_mb=peak_memory_mb(device), torch=torch.__version__,
        transformers=transformers.__version__, threads=torch.get_num_threads(),
    )
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_command(system: str, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, os.path.abspath(__file__), "--only", system]
    for flag in ("steps", "prompts", "generations", "max_new_tokens", "model", "dtype", "device", "seed", "threads", "micro_batch_size"):
        value = getattr(args, flag)
        if value is not None:
            command += ["--" + flag.replace("_", "-"), str(value)]
    return command


def run_children(args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ)
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # our trainer uses a GPU whenever it sees one
    results = []
    for system in args.systems.split(","):
        print(f"== {system}", flush=True)
        proc = subprocess.run(child_command(system, args), env=env, stdout=subprocess.PIPE, text=True)
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
    print(f"\nmodel {args.model}, {args.dtype}, {results[0]['device']}, {args.prompts} prompts x {args.generations} "
          f"rollouts, {args.max_new_tokens} new tokens, beta 0, no_commas reward; uniapl B_E = {args.prompts} demos/step; "
          f"median of {args.steps} steps after 1 warm-up; {results[0]['threads']} torch threads; torch {results[0]['torch']}, "
          f"transformers {results[0]['transformers']}")
    print(f"| system | s/step (median) | completion tok/s | mean completion len | generation s | scoring s | training s | {memory} | all steps (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['system']} | {r['median_step_s']:.2f} | {r['completion_tok_per_s']:.1f} | {r['mean_completion_len']:.1f} | "
              f"{r['median_generation_s']:.2f} | {r['median_scoring_s']:.3f} | {r['median_training_s']:.2f} | "
              f"{r['peak_memory_mb']:.0f} | {', '.join(map(str, r['step_s_all']))} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        run_one(args)
        return
    results = run_children(args)
    print_table(results, args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
