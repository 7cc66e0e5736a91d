"""Generation (rollout engines, seeded sampling, the KV cache), apart from training: evaluation, teaching and analysis use it too."""

from uniapl.generation.engines import (
    ENGINES,
    CompiledEngine,
    Completion,
    ModelEngine,
    PlainEngine,
    RolloutEngine,
    StopPredicate,
    encode_prompts,
    generate,
    render_prompt,
    resolve_engine_name,
    sequence_seed,
)
from uniapl.generation.positions import position_ids
from uniapl.generation.sampling import SamplingParams
from uniapl.generation.vllm_engine import VLLMEngine

__all__ = [
    "ENGINES",
    "CompiledEngine",
    "Completion",
    "ModelEngine",
    "PlainEngine",
    "RolloutEngine",
    "SamplingParams",
    "StopPredicate",
    "VLLMEngine",
    "encode_prompts",
    "generate",
    "position_ids",
    "render_prompt",
    "resolve_engine_name",
    "sequence_seed",
]
