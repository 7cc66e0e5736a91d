#!/usr/bin/env bash
# The reproduction of docs/results.md ("UniAPL against GRPO and SFT-then-GRPO"), end to end:
#   bash scripts/repro/run.sh tune     # each algorithm at each learning rate, seed 0, held-out split only; report: runs/repro/tune/report
#   bash scripts/repro/run.sh grid     # each algorithm at its tuned learning rate, seeds 1-3: train, held-out, IFEval, analysis
#   bash scripts/repro/run.sh start    # the start model and the echo floor, with the same settings
#   bash scripts/repro/run.sh report   # the comparison report (runs/repro/grid/report) and the results table
#   bash scripts/repro/run.sh restore  # lay the results published in docs/repro out under runs/repro (a fresh clone, a lost runs/)
#   bash scripts/repro/run.sh all      # restore, tune, start, grid, report: the start model early, so the tuning can be read against it
# Two lanes, one thread each (two 1-thread jobs use 2 cores better than one 2-thread job); lanes skip the report,
# which the stage writes over all runs when both lanes are done. Every step resumes:
# rerun the same command after an interruption. A run whose results are published is not trained again.
set -euo pipefail
SELF="$(realpath "$0")"
cd "$(dirname "$SELF")/../.."
export OMP_NUM_THREADS=1
mkdir -p runs/repro
UNIAPL=.venv/bin/uniapl
CONFIG=configs/repro/base.yaml
EVAL=(--heldout data/if_heldout.jsonl --expert data/if_heldout.jsonl --eval-max-new-tokens 384 --eval-batch-size 64 --dtype bf16)
# dtype auto trained every run of the first four algorithms in bf16 (CPUs with AMX, and AVX512-BF16 under the code of
# the time); it picks fp32 on a CPU where bf16 is slower, so the dtype is pinned for the runs that came later
TRAIN=(--set model.dtype=bf16)
LEARNING_RATES=(3e-6 1e-5)
# sft: the first of the protocol's "as the budget allows" algorithms, added after the grid's first four
LANES=("grpo uniapl" "uniapl_no_adv sft_then_grpo sft")
ALGORITHMS=grpo,sft_then_grpo,uniapl,uniapl_no_adv,sft

tune_lane() {
  for algorithm in $1; do
    for lr in "${LEARNING_RATES[@]}"; do
      $UNIAPL compare $CONFIG --algorithms "$algorithm" --seeds 0 --out "runs/repro/tune/lr$lr" \
        --set training.learning_rate="$lr" "${TRAIN[@]}" "${EVAL[@]}" --skip ifeval,analyze,report || echo "run.sh: $algorithm at $lr failed; rerun to resume it"
    done
  done
}

# Seed by seed, so that whenever the grid stops, every algorithm has about as many finished seeds as the others.
grid_lane() {
  for seed in 1 2 3; do
    for algorithm in $1; do
      lr=$(.venv/bin/python scripts/repro/select_lr.py --algorithm "$algorithm") || { echo "run.sh: no tuned learning rate for $algorithm; finish its tuning first"; continue; }
      $UNIAPL compare $CONFIG --algorithms "$algorithm" --seeds "$seed" --out runs/repro/grid --set training.learning_rate="$lr" "${TRAIN[@]}" "${EVAL[@]}" --skip report \
        || echo "run.sh: $algorithm at seed $seed failed; rerun to resume it"
    done
  done
}

case "${1:-}" in
  all)
    for stage in restore tune start grid report; do bash "$SELF" "$stage"; done ;;
  restore)
    .venv/bin/python scripts/repro/publish.py --restore ;;
  tune)
    for lane in "${LANES[@]}"; do tune_lane "$lane" >> "runs/repro/tune-${lane%% *}.log" 2>&1 & done
    wait
    $UNIAPL report runs/repro/tune/lr*/*-seed0 --out runs/repro/tune/report
    .venv/bin/python scripts/repro/select_lr.py --table ;;
  grid)
    for lane in "${LANES[@]}"; do grid_lane "$lane" >> "runs/repro/grid-${lane%% *}.log" 2>&1 & done
    wait ;;
  start)
    model=smollm2-135m-instruct
    $UNIAPL eval ifeval --model $model --dtype bf16 --max-new-tokens 384 --batch-size 64 --out runs/repro/start/final &
    ( $UNIAPL eval ifeval --model $model --dtype bf16 --max-new-tokens 384 --batch-size 64 --data data/if_heldout.jsonl \
        --out runs/repro/start/final/heldout
      $UNIAPL analyze --model $model --expert data/if_heldout.jsonl --dtype bf16 --max-new-tokens 384 --batch-size 64 \
        --reward ifeval_strict --out runs/repro/start/final/analysis
      $UNIAPL eval ifeval --model echo --out runs/repro/echo/final
      $UNIAPL eval ifeval --model echo --data data/if_heldout.jsonl --out runs/repro/echo/final/heldout ) &
    wait ;;
  report)
    $UNIAPL compare $CONFIG --algorithms $ALGORITHMS --seeds 1,2,3 --out runs/repro/grid "${TRAIN[@]}" "${EVAL[@]}"
    .venv/bin/python scripts/repro/results_table.py ;;
  *)
    echo "usage: bash scripts/repro/run.sh restore|tune|grid|start|report|all" >&2
    exit 2 ;;
esac
