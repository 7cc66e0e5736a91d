"""IFEval, fully offline: IFEval's prompts, lm-eval's reference checkers, a resumable benchmark runner."""

from uniapl.ifeval.runner import run_ifeval
from uniapl.ifeval.scoring import check_response, score_responses

__all__ = ["run_ifeval", "score_responses", "check_response"]
