"""The floor of step_throughput.py's step on this machine: its matmul FLOP at the matmul rate measured here.

A step of any system does at least the model's matmuls: decoding every rollout token (rows x the weights, one token
at a time) and a forward and backward pass over prompt + completion (the output layer on completion tokens only, as
ours computes it), plus attention. Each distinct weight shape is timed here at the training pass's row count, in the
given dtype, on the threads torch uses: the rate this CPU's matmuls reach on large operands. The floor is the step's
FLOP at that rate. Decoding runs at far fewer rows, where torch's matmuls are slower (printed too) but vLLM's kernels
are not, so the floor charges decoding at the large-operand rate. Everything else a step does (sampling, softmax,
norms, the optimizer, Python) is above the floor. With --results, each system of a step_throughput.py JSON is set
against it.

    python benchmarks/step_floor.py --dtype fp32 --results runs/bench/step.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from step_throughput import dataset_rows


def linear_shapes(config) -> list[tuple[int, int, int]]:
    """(in, out, count) of every matmul weight of a decoder layer stack (q, k, v, o, gate, up, down)."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = config.num_key_value_heads * head_dim
    layers = config.num_hidden_layers
    return [(hidden, heads * head_dim, layers), (hidden, kv, 2 * layers), (heads * head_dim, hidden, layers),
            (hidden, config.intermediate_size, 2 * layers), (config.intermediate_size, hidden, layers)]


def matmul_seconds(rows: int, fan_in: int, fan_out: int, dtype: torch.dtype, repeats: int) -> float:
    """Median seconds of one [rows, in] @ [in, out] matmul."""
    x, w = torch.randn(rows, fan_in, dtype=dtype), torch.randn(fan_in, fan_out, dtype=dtype)
    x @ w  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x @ w
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def pass_cost(rows: int, shapes: list[tuple[int, int, int]], vocab: int, head_rows: int, dtype, repeats: int) -> tuple[float, float]:
    """(FLOP, seconds) of one forward pass's matmuls over `rows` tokens, the output layer over `head_rows` of them."""
    flop = seconds = 0.0
    for fan_in, fan_out, count in shapes:
        flop += 2 * rows * fan_in * fan_out * count
        seconds += matmul_seconds(rows, fan_in, fan_out, dtype, repeats) * count
    if head_rows:
        flop += 2 * head_rows * shapes[0][0] * vocab
        seconds += matmul_seconds(head_rows, shapes[0][0], vocab, dtype, repeats)
    return flop, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "data" / "if_train.jsonl"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--demos", type=int, default=8, help="uniapl's demonstrations per step (step_throughput.py's)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", help="a step_throughput.py --json-out file: each system against the floor")
    args = parser.parse_args()

    from transformers import AutoConfig, AutoTokenizer

    from uniapl.models import resolve_model_path

    path = resolve_model_path(args.model)
    config, tokenizer = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    rows = dataset_rows(args.data, args.prompts)
    prompt_lengths = [len(tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True)) for r in rows]
    demo_lengths = [len(tokenizer(r["completion"][0]["content"])["input_ids"]) + 1 for r in rows[: args.demos]]
    shapes, vocab, layers, width = linear_shapes(config), config.vocab_size, config.num_hidden_layers, config.hidden_size
    sequences, new = args.prompts * args.generations, args.max_new_tokens

    # decoding: one token of every rollout per step, the whole model (output layer included) at `sequences` rows;
    # attention reads the cache: 4 * context * width FLOP per token and layer
    decode_flop, decode_s = pass_cost(sequences, shapes, vocab, sequences, dtype, args.repeats)  # one token per rollout
    mean_prompt = sum(prompt_lengths) / len(prompt_lengths)
    attention = 4 * width * layers * sequences * sum(mean_prompt + t for t in range(new))
    generation_flop = decode_flop * new + attention
    print(f"torch's decode-shaped matmuls ({sequences} rows): {decode_flop / decode_s / 1e9:.1f} GFLOP/s")

    def training(extra_lengths: list[int]) -> tuple[float, float]:
        """Forward + backward (3x the forward's matmul FLOP) over the rollouts and `extra_lengths` demonstrations."""
        lengths = [p + new for p in prompt_lengths for _ in range(args.generations)] + [mean_prompt + d for d in extra_lengths]
        tokens, completions = int(sum(lengths)), sequences * new + sum(extra_lengths)
        flop, seconds = pass_cost(tokens, shapes, vocab, completions, dtype, args.repeats)
        causal_attention = sum(2 * width * layers * length * length for length in lengths)  # QK^T and AV, half masked
        return 3 * (flop + causal_attention), 3 * seconds * (flop + causal_attention) / flop  # attention at the same rate

    floors = {}
    for system, demos in (("grpo", []), ("uniapl", demo_lengths)):
        train_flop, train_s = training(demos)
        rate = train_flop / train_s
        floors[system] = (generation_flop + train_flop) / rate
        print(f"{system}: matmuls at {rate / 1e9:.1f} GFLOP/s; generation {generation_flop / 1e12:.3f} TFLOP, floor "
              f"{generation_flop / rate:.4g} s; training {train_flop / 1e12:.3f} TFLOP, floor {train_s:.4g} s; "
              f"step floor {floors[system]:.4g} s")
    if args.results:
        print("\n| system | s/step | floor s | x floor |\n|---|---|---|---|")
        for result in json.loads(Path(args.results).read_text())["results"]:
            if "median_step_s" not in result:
                continue
            floor = floors["uniapl" if result.get("demos_per_step") else "grpo"]
            print(f"| {result['system']} | {result['median_step_s']:.1f} | {floor:.4g} | {result['median_step_s'] / floor:.2f} |")


if __name__ == "__main__":
    main()
