"""uniapl: Unified Adversarial Preference Learning (arXiv 2509.25148) for Hugging Face models."""

from uniapl.config import UniAPLConfig

__all__ = ["UniAPLConfig", "UniAPLTrainer"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the trainer pulls in torch and transformers; import it only when asked for
    if name == "UniAPLTrainer":
        from uniapl.train.trainer import UniAPLTrainer

        return UniAPLTrainer
    raise AttributeError(f"module 'uniapl' has no attribute {name!r}")
