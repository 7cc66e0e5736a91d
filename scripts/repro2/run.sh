#!/usr/bin/env bash
# The second grid of docs/results.md ("The second grid: a rule-assisted teacher", issue 26), end to end:
#   bash scripts/repro2/run.sh data           # the rule-assisted demonstrations (data/DATACARD.md), then data/rule_assisted/
#   bash scripts/repro2/run.sh epsilon        # UniAPL's budget: the start policy's per-token NLL on them, written into base.yaml
#   bash scripts/repro2/run.sh discriminator  # AAPA's discriminator on them (minilm; ngram and policy for the analysis)
#   bash scripts/repro2/run.sh tune           # each algorithm at each learning rate, seed 0, held-out split only
#   bash scripts/repro2/run.sh tune chord:3e-5      # only those tuning runs, in that order
#   bash scripts/repro2/run.sh start          # the start model and the echo floor, with the same settings
#   bash scripts/repro2/run.sh grid           # each algorithm at its tuned learning rate, seeds 1-3: train and evaluate
#                                             # (start, tune and grid refit the minilm discriminator first where it is missing;
#                                             # staged_aapa and grpo_aapa train against it, and every final model's samples
#                                             # are scored by it, only where it is the published fit)
#   bash scripts/repro2/run.sh grid grpo:1 grpo:2   # only those runs, in that order
#   bash scripts/repro2/run.sh report         # the comparison report (runs/repro2/grid/report) over the algorithms whose
#                                             # seeds have all finished, and the results table
#   bash scripts/repro2/run.sh publish        # copy the results (not the weights) and the compute table to docs/repro2, to be
#                                             # committed as runs finish
#   bash scripts/repro2/run.sh restore        # lay the results published in docs/repro2 out under runs/repro2
#   bash scripts/repro2/run.sh all            # data, epsilon, discriminator, tune, start, grid and report, in this order
# The protocol's algorithms come in priority order. PRIORITY=1 (the default): grpo, sft_then_grpo, uniapl and
# staged_aapa. PRIORITY=2 adds grpo_aapa, sft and chord to the tuning, the grid and the report, e.g.
#   PRIORITY=2 bash scripts/repro2/run.sh tune && PRIORITY=2 bash scripts/repro2/run.sh grid
# PRIORITY=3 adds the third group, staged_aapa@bestofk: staged_aapa on the first grid's best-of-K data
# (data/if_train.jsonl), against a minilm discriminator fitted on that data (runs/repro2/disc-minilm-bestofk), its runs
# under runs/repro2/bestofk/, laid out like runs/repro2 (tune/, grid/); the discriminator stage fits it.
# Two lanes, one core each: OMP_NUM_THREADS=1 for torch, and vLLM's CPU threads bound to the lane's own core
# (VLLM_CPU_OMP_THREADS_BIND; by default vLLM binds every engine to all cores). LANES=1 runs one lane on every core
# instead: one run finishes sooner, at some cost in throughput. The tuning and the grid are queues of
# runs: each lane takes the next run that no lane has taken. LANE=0 or LANE=1 runs a queue on that lane alone, beside
# another queue on the other lane, e.g. `LANE=1 bash scripts/repro2/run.sh grid chord:1` while lane 0 tunes; the two
# must name different runs. Every step resumes: rerun the same command after an
# interruption. The epsilon and discriminator stages run alone, on every core. Training and
# evaluation run in .venv-vllm (bash scripts/setup.sh --vllm).
set -euo pipefail
SELF="$(realpath "$0")"
cd "$(dirname "$SELF")/../.."
export OMP_NUM_THREADS=1
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys those two
ALL_CORES=(env OMP_NUM_THREADS="$CORES")
mkdir -p runs/repro2
UNIAPL=${UNIAPL:-.venv-vllm/bin/uniapl}  # the environment may name others (tests do)
PYTHON=${PYTHON:-.venv-vllm/bin/python}
CONFIG=configs/repro2/base.yaml
RUNS=runs/repro2
EVAL=(--heldout data/rule_assisted/if_heldout.jsonl --expert data/rule_assisted/if_heldout.jsonl --eval-max-new-tokens 384
      --eval-batch-size 64 --dtype fp32 --eval-engine vllm --ifbench)
# fp32 on every CPU: the lanes may run on CPUs with and without fast bf16 across sessions, and one precision keeps the
# grid's runs comparable
TRAIN=(--set model.dtype=fp32)
LEARNING_RATES=(1e-5 3e-5)
PRIORITY=${PRIORITY:-1}
[[ $PRIORITY =~ ^[123]$ ]] || { echo "run.sh: PRIORITY is '$PRIORITY'; it may be 1 (the first four algorithms), 2 (all seven)" \
  "or 3 (and staged_aapa on the best-of-K data)" >&2; exit 2; }
# each priority's algorithms as the report lists them, and in the queues' order: the dearest runs first, so that the
# lanes end at about the same time
FIRST_GROUP=grpo,sft_then_grpo,uniapl,staged_aapa
SECOND_GROUP=grpo_aapa,sft,chord
THIRD_GROUP=staged_aapa@bestofk  # ALGORITHM@bestofk: the algorithm on the best-of-K data (on_data)
ALGORITHMS=$FIRST_GROUP  # the report's, on the rule-assisted data
DEAREST_FIRST=(staged_aapa uniapl sft_then_grpo grpo)
if [ "$PRIORITY" -ge 2 ]; then
  ALGORITHMS+=,$SECOND_GROUP
  DEAREST_FIRST+=(chord grpo_aapa sft)
fi
if [ "$PRIORITY" = 3 ]; then DEAREST_FIRST+=("$THIRD_GROUP"); fi
NAMED=$FIRST_GROUP,$SECOND_GROUP,$THIRD_GROUP  # what `tune ALGORITHM:LR` and `grid ALGORITHM:SEED` may name, at any priority
ANCHORED=(staged_aapa grpo_aapa)  # they train against the minilm discriminator
BESTOFK=(--set data.prompts=data/if_train.jsonl --set algorithm.anchor.path=$RUNS/disc-minilm-bestofk)
TEACH=(teach --teacher smollm2-135m-instruct --dtype auto --rule-assisted --draft-prompt full --samples 8 --round-size 4
       --enough 1 --max-new-tokens 384 --temperature 0.7 --top-p 1.0 --batch-size 64 --seed 0)

LANES=${LANES:-2}
[[ $LANES =~ ^[12]$ ]] || { echo "run.sh: LANES is '$LANES'; it may be 1 (one lane on every core) or 2 (one core each)" >&2; exit 2; }

LANE=${LANE:-}
[ -z "$LANE" ] || { [ "$LANES" = 2 ] && [[ $LANE =~ ^[01]$ ]]; } \
  || { echo "run.sh: LANE is '$LANE'; it may be 0 or 1 (one lane, on that core), with LANES=2" >&2; exit 2; }

lane() {  # lane NUMBER COMMAND...: core NUMBER's job (every core's, with one lane), its output appended to runs/repro2/lane-NUMBER.log
  local number=$1 threads=1 cores=$1
  shift
  [ "$LANES" = 1 ] && threads=$CORES cores=0-$((CORES - 1))
  OMP_NUM_THREADS=$threads VLLM_CPU_OMP_THREADS_BIND=$cores "$@" >> "$RUNS/lane-$number.log" 2>&1
}

wait_lanes() {  # wait_lanes PID...: wait for every lane, then fail if one failed, so that `all` stops there
  local failed=0
  for pid in "$@"; do wait "$pid" || failed=1; done
  [ $failed = 0 ] || { echo "run.sh: a lane failed (see $RUNS/lane-*.log); rerun the same command to resume" >&2; exit 1; }
}

# A lane claims a job by making its folder under runs/repro2/claims/STAGE (mkdir either makes it or fails, so two
# lanes never take the same job). The claims are cleared when the stage starts (with LANE, the claims of its own jobs):
# a job whose lane was stopped is taken again, and its run resumes from its last checkpoint.
run_queue() {  # run_queue STAGE FUNCTION JOB...: the lanes take the jobs in turn, each running FUNCTION JOB; wait for all
  local stage=$1 function=$2 number pids=() lanes job
  shift 2
  if [ -z "$LANE" ]; then
    lanes=$(seq 0 $((LANES - 1)))
    rm -rf "$RUNS/claims/$stage"
  else  # the other lane's queue may be running: clear only this queue's own claims
    lanes=$LANE
    for job in "$@"; do rm -rf "$RUNS/claims/$stage/${job// /_}"; done
  fi
  mkdir -p "$RUNS/claims/$stage"
  for number in $lanes; do lane $number take_jobs "$stage" "$function" "$@" & pids+=($!); done
  wait_lanes "${pids[@]}"
}

take_jobs() {  # take_jobs STAGE FUNCTION JOB...: FUNCTION JOB for every job that no other lane has claimed, in order
  local stage=$1 function=$2 job
  shift 2
  for job in "$@"; do
    if mkdir "$RUNS/claims/$stage/${job// /_}" 2>/dev/null; then $function $job; fi
  done
}

teach() {  # teach SPLIT FIRST COUNT SUFFIX: COUNT prompts of the split from FIRST on, into demos_SPLIT$SUFFIX.jsonl
  $UNIAPL "${TEACH[@]}" --prompts runs/teach/if_prompts_$1.jsonl --out "data/rule_assisted/teach/demos_$1$4.jsonl" --start "$2" --limit "$3"
}

# The held-out prompts split 150/50: when the split was set (2026-12-06), lane 0 had 132 training prompts left and
# lane 1 233, so that both lanes end at about the same time
teach_lane_0() { teach train 0 500 "" && teach heldout 0 150 ""; }
teach_lane_1() { teach train 500 500 .part2 && teach heldout 150 50 .part2; }

same_fit() {  # same_fit REPORT REPORT: both discriminator reports have one held-out quality, to the last digit
  $PYTHON - "$1" "$2" <<'PY'
import json, sys
reports = [json.load(open(path)) for path in sys.argv[1:]]
sys.exit(any(reports[0].get(key) != reports[1].get(key) for key in ("auc", "acc_expert", "acc_policy", "best_epoch")))
PY
}

# staged_aapa and grpo_aapa train against the minilm discriminator, and it scores every final model's analysis
# samples (the report's "Discriminator variants"; a column of the results table). On a fresh clone it is refitted
# first (about 80 s). The fit is seeded, so the refit is the published one, up to float rounding; the grid uses that one fit only.
# The third group's fit, minilm-bestofk, is checked the same way, and only its runs train against it.
SCORE=()  # `--discriminator` for the evaluations, where the fit is the published one
jobs=()  # a queue's jobs, "ALGORITHM SEED" or "ALGORITHM LEARNING_RATE"

published_fit() {  # published_fit FIT: whether runs/repro2/disc-FIT is the published fit, refitted first where it is missing
  # under a lock, so that two queues started together on a fresh clone refit it once, not both into one folder
  ( flock 9 && { [ -f $RUNS/disc-$1/discriminator.json ] || bash "$SELF" discriminator "$1"; } ) 9> "$RUNS/.refit-$1.lock"
  local published=docs/repro2/discriminators/$1/report.json
  same_fit $RUNS/disc-$1/report.json $published && return 0
  echo "run.sh: $RUNS/disc-$1 is not the fit that the grid uses ($published differs in held-out AUC, accuracy or" \
    "best epoch)" >&2
  return 1
}

# the tuning, the grid, the start model and the report: the minilm fit scores the final models; runs that train
# against a fit other than the published one are left out of the queue
use_the_fits() {
  if published_fit minilm; then
    SCORE=(--discriminator $RUNS/disc-minilm)
  else
    echo "run.sh: no model's samples are scored by the discriminator" >&2
    drop_anchored "${ANCHORED[@]}"
  fi
  if [[ " ${jobs[*]} " == *" $THIRD_GROUP "* ]]; then published_fit minilm-bestofk || drop_anchored "$THIRD_GROUP"; fi
}

drop_anchored() {  # drop_anchored ALGORITHM...: leaves their runs out of $jobs, and says so
  local algorithm i
  for algorithm in "$@"; do
    [[ " ${jobs[*]} " == *" $algorithm "* ]] || continue
    echo "run.sh: $algorithm is left out of this queue" >&2
    for i in "${!jobs[@]}"; do
      if [[ ${jobs[i]} == "$algorithm "* ]]; then unset "jobs[i]"; fi
    done
  done
}

unless_done() {  # unless_done FILE COMMAND...: COMMAND, unless FILE, its result, is already there
  [ -f "$1" ] || "${@:2}"
}

# The start model with the grid's evaluation settings, and the echo floor; `uniapl analyze` keeps a finished analysis
START=(--model smollm2-135m-instruct --dtype fp32 --max-new-tokens 384 --batch-size 64 --engine vllm)
start_lane_0() { unless_done $RUNS/start/final/ifeval_scores.json $UNIAPL eval ifeval "${START[@]}" --out $RUNS/start/final; }
start_lane_1() {
  local heldout=data/rule_assisted/if_heldout.jsonl final=$RUNS/start/final
  unless_done $final/heldout/ifeval_scores.json $UNIAPL eval ifeval "${START[@]}" --data $heldout --out $final/heldout &&
    unless_done $final/ifbench/ifbench_summary.json $UNIAPL eval ifbench "${START[@]}" --out $final/ifbench &&
    $UNIAPL analyze "${START[@]}" --expert $heldout --reward ifeval_strict --out $final/analysis "${SCORE[@]}" &&
    unless_done $RUNS/echo/final/ifeval_scores.json $UNIAPL eval ifeval --model echo --out $RUNS/echo/final &&
    unless_done $RUNS/echo/final/heldout/ifeval_scores.json $UNIAPL eval ifeval --model echo --data $heldout \
      --out $RUNS/echo/final/heldout
}

# A failed run is reported and the queue goes on; rerunning the stage resumes it.
on_data() {  # on_data NAME: the algorithm, the runs' folder and the data overrides of a queue's ALGORITHM or ALGORITHM@bestofk
  algorithm=${1%@bestofk} root=$RUNS data=()
  if [ "$algorithm" != "$1" ]; then root=$RUNS/bestofk data=("${BESTOFK[@]}"); fi
}

# A trained run's checkpoints go: final/ keeps its weights, which are all its evaluations need, and the optimizer's state
# beside them (1.6 GB a run) would fill the disk over the grid's runs
drop_checkpoints() {  # drop_checkpoints RUN
  if [ -f "$1/final/config.json" ]; then rm -rf "$1/checkpoints"; fi
}

tune_run() {  # tune_run NAME LEARNING_RATE
  local algorithm root data
  on_data "$1"
  $UNIAPL compare $CONFIG --algorithms "$algorithm" --seeds 0 --out "$root/tune/lr$2" --set training.learning_rate="$2" \
    "${TRAIN[@]}" "${data[@]}" "${EVAL[@]}" --skip ifeval,ifbench,analyze,report || echo "run.sh: $1 at $2 failed; rerun to resume it"
  drop_checkpoints "$root/tune/lr$2/$algorithm-seed0"
}

grid_run() {  # grid_run NAME SEED
  local algorithm root data lr
  on_data "$1"
  lr=$($PYTHON scripts/repro/select_lr.py --runs "$root" --algorithm "$algorithm") \
    || { echo "run.sh: no tuned learning rate for $1; finish its tuning first"; return 0; }
  $UNIAPL compare $CONFIG --algorithms "$algorithm" --seeds "$2" --out "$root/grid" --set training.learning_rate="$lr" \
    "${TRAIN[@]}" "${data[@]}" "${EVAL[@]}" "${SCORE[@]}" --skip report || echo "run.sh: $1 at seed $2 failed; rerun to resume it"
  drop_checkpoints "$root/grid/$algorithm-seed$2"
}

# The report covers an algorithm once each of its seeds is trained and evaluated (its analysis written: what is left, the
# discriminators' scores of the samples, takes seconds); a run still in a lane is that lane's to finish, never the
# report's, which would otherwise train or evaluate it beside the lane
evaluated() {  # evaluated ROOT ALGORITHM,...: those of the algorithms ready for the report, comma-separated
  local root=$1 algorithm seed missing ready=()
  for algorithm in ${2//,/ }; do
    missing=()
    for seed in 1 2 3; do [ -f "$root/grid/$algorithm-seed$seed/final/analysis/analysis.json" ] || missing+=("$seed"); done
    if [ ${#missing[@]} = 0 ]; then
      ready+=("$algorithm")
    else
      echo "run.sh: $algorithm is left out of the report until its seeds ${missing[*]} are trained and evaluated (run.sh grid)" >&2
    fi
  done
  local IFS=,
  echo "${ready[*]}"
}

named_jobs() {  # named_jobs STAGE WHAT VALUES JOB...: $jobs from the stage's ALGORITHM:VALUE names, or stop at one it does not know
  local stage=$1 what=$2 values=$3 job
  shift 3
  for job in "$@"; do
    [[ $job =~ ^(${NAMED//,/|}):(${values// /|})$ ]] || { echo "run.sh: $stage job '$job' is not ALGORITHM:${what^^}" \
      "(algorithms ${NAMED//,/, }; ${what}s ${values// /, })" >&2; exit 2; }
    jobs+=("${job/:/ }")
  done
}

case "${1:-}" in
  data)  # the teacher's files, under data/rule_assisted/teach/, are committed as they grow: a fresh clone resumes them
    [ -f runs/teach/if_prompts_heldout.jsonl ] || $UNIAPL data build-if --n 1000 --seed 2026 --out runs/teach/if_prompts_train.jsonl \
      --heldout 200 --heldout-out runs/teach/if_prompts_heldout.jsonl
    lane 0 teach_lane_0 & first=$!
    lane 1 teach_lane_1 & second=$!
    wait_lanes $first $second
    mkdir -p data/rule_assisted
    for split in train heldout; do
      teach_files=(data/rule_assisted/teach/demos_$split.jsonl data/rule_assisted/teach/demos_$split.part2.jsonl)
      $UNIAPL data attach-demos --prompts runs/teach/if_prompts_$split.jsonl --demos "${teach_files[@]}" --out data/rule_assisted/if_$split.jsonl
      cat "${teach_files[@]/%/.status.jsonl}" > data/rule_assisted/if_$split.status.jsonl
    done ;;
  epsilon)  # measured once, before the first run; a budget already in base.yaml is kept
    if grep -q '^  epsilon: null' $CONFIG; then
      nll=$("${ALL_CORES[@]}" $PYTHON scripts/repro/expert_nll.py --data data/rule_assisted/if_train.jsonl | tee -a $RUNS/epsilon.log \
        | sed -n 's/.*per-token NLL \([0-9.]*\)$/\1/p')
      [ -n "$nll" ] || { echo "run.sh: expert_nll.py printed no NLL (see $RUNS/epsilon.log)" >&2; exit 1; }
      sed -i "s/^  epsilon: null/  epsilon: $nll/" $CONFIG
    fi
    grep '^  epsilon:' $CONFIG ;;
  discriminator)  # minilm for AAPA, then ngram and policy on the same negatives for the analysis; a finished one is kept
    # the start policy's responses, sampled once and committed: on a fresh clone the discriminators are refitted from them.
    # PRIORITY=3: minilm-bestofk too, on the best-of-K demonstrations against the negatives of their prompts.
    # `discriminator FIT...`: only those
    negatives=docs/repro2/discriminators/negatives.jsonl
    fits=(minilm ngram policy)
    if [ "$PRIORITY" = 3 ]; then fits+=(minilm-bestofk); fi
    if [ $# -gt 1 ]; then fits=("${@:2}"); fi
    for fit in "${fits[@]}"; do
      [[ $fit =~ ^(minilm|ngram|policy|minilm-bestofk)$ ]] \
        || { echo "run.sh: discriminator '$fit' is not one of minilm, ngram, policy, minilm-bestofk" >&2; exit 2; }
    done
    for fit in "${fits[@]}"; do
      [ -f $RUNS/disc-$fit/discriminator.json ] && continue
      # the runs train against the minilm fits only; the other two are results, their published reports
      variant=${fit%-bestofk}
      [ $variant != minilm ] && [ -f docs/repro2/discriminators/$fit/report.json ] && continue
      data=(); [ $fit = $variant ] || data=("${BESTOFK[@]}")
      sampled=(); [ -f $negatives ] && sampled=(--negatives $negatives)
      "${ALL_CORES[@]}" $UNIAPL discriminator train $CONFIG "${TRAIN[@]}" "${data[@]}" --variant $variant "${sampled[@]}" \
        --out $RUNS/disc-$fit
      mkdir -p docs/repro2/discriminators/$fit
      [ -f $negatives ] || cp $RUNS/disc-$fit/negatives.jsonl $negatives
      # a published report stays: it is the fit the runs trained against, which the grid checks a refit against
      [ -f docs/repro2/discriminators/$fit/report.json ] \
        || cp $RUNS/disc-$fit/report.json $RUNS/disc-$fit/scores_hist.png docs/repro2/discriminators/$fit/
    done ;;
  tune)  # `tune ALGORITHM:LEARNING_RATE...` queues only those runs
    jobs=()
    if [ $# -gt 1 ]; then
      named_jobs tune "learning rate" "${LEARNING_RATES[*]}" "${@:2}"
    else
      for algorithm in "${DEAREST_FIRST[@]}"; do for lr in "${LEARNING_RATES[@]}"; do jobs+=("$algorithm $lr"); done; done
    fi
    use_the_fits
    run_queue tune tune_run "${jobs[@]}"
    $UNIAPL report $RUNS/tune/lr*/*-seed0 --out $RUNS/tune/report
    $PYTHON scripts/repro/select_lr.py --runs $RUNS --table
    if compgen -G "$RUNS/bestofk/tune/lr*/*-seed0" > /dev/null; then
      $UNIAPL report $RUNS/bestofk/tune/lr*/*-seed0 --out $RUNS/bestofk/tune/report
      $PYTHON scripts/repro/select_lr.py --runs $RUNS/bestofk --start $RUNS/start --table
    fi ;;
  start)  # a result already there is kept
    use_the_fits
    lane 0 start_lane_0 & first=$!
    lane 1 start_lane_1 & second=$!
    wait_lanes $first $second ;;
  grid)  # seed by seed, so that whenever the grid stops, every algorithm has about as many finished seeds as the others
    # `grid ALGORITHM:SEED...` queues only those runs: a session that may end on a fresh machine, where the checkpoints
    # of unfinished runs are lost, takes the runs that finish within it
    jobs=()
    if [ $# -gt 1 ]; then
      named_jobs grid seed "1 2 3" "${@:2}"
    else
      for seed in 1 2 3; do for algorithm in "${DEAREST_FIRST[@]}"; do jobs+=("$algorithm $seed"); done; done
    fi
    use_the_fits
    run_queue grid grid_run "${jobs[@]}" ;;
  report)
    use_the_fits
    ready=$(evaluated $RUNS "$ALGORITHMS")
    if [ -n "$ready" ]; then
      $UNIAPL compare $CONFIG --algorithms "$ready" --seeds 1,2,3 --out $RUNS/grid "${TRAIN[@]}" "${EVAL[@]}" "${SCORE[@]}"
    fi
    tracks=()
    if [ "$PRIORITY" = 3 ] && published_fit minilm-bestofk; then
      on_data "$THIRD_GROUP"
      if [ -n "$(evaluated "$root" "$algorithm")" ]; then
        $UNIAPL compare $CONFIG --algorithms "$algorithm" --seeds 1,2,3 --out "$root/grid" "${TRAIN[@]}" "${data[@]}" "${EVAL[@]}" \
          "${SCORE[@]}"
      fi
      tracks=(--track "bestofk=best-of-K data")
    fi
    $PYTHON scripts/repro/results_table.py --runs $RUNS "${tracks[@]}" ;;
  publish)
    $PYTHON scripts/repro/publish.py --runs $RUNS --out docs/repro2
    $PYTHON scripts/repro/compute.py --runs $RUNS > docs/repro2/compute.md ;;
  restore)
    $PYTHON scripts/repro/publish.py --runs $RUNS --out docs/repro2 --restore ;;
  all)
    for stage in data epsilon discriminator tune start grid report; do bash "$SELF" $stage; done ;;
  *)
    echo "usage: bash scripts/repro2/run.sh data|epsilon|discriminator|tune|start|grid|report|publish|restore|all" >&2
    exit 2 ;;
esac
