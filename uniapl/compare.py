"""Train, evaluate and analyze every (algorithm, seed) with everything else equal, then report them.

Each run's steps: train; the held-out split (greedy, scored like IFEval, in `final/heldout/`), which
is what tuning may look at; IFEval; the analysis against the expert; and, given AAPA discriminator
folders, their scores on the analysis's samples. Tuning runs skip IFEval, so a choice made on them
never sees it.

Resumable at each step: an eval or analysis whose JSON exists is not redone, and a run is not trained
again once its final model exists (`final/config.json`) or every result asked for does. An interrupted
run resumes from its last checkpoint. A saved result made with other evaluation settings (length, dtype,
prompts, sampling) is an error rather than a silent reuse, so one report never mixes two protocols.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from uniapl.analysis.analyze import ANALYSIS_JSON, AnalysisSettings, recorded_settings
from uniapl.analysis import DEFAULT_SMOOTHING_WINDOW
from uniapl.analysis.discriminators import DISCRIMINATORS_JSON
from uniapl.analysis.report import EVAL_JSON, HELDOUT_DIR, write_report
from uniapl.config import flatten
from uniapl.errors import UniaplError
from uniapl.generation import SamplingParams
from uniapl.ifeval.ifbench import SUMMARY_FILE as IFBENCH_SUMMARY
from uniapl.ifeval.runner import DEFAULT_ENGINE
from uniapl.io import read_json, write_json_atomic


@dataclass(frozen=True)
class CompareSettings:
    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...] = ()  # `--set k=v`, the same for every run
    expert: str = "data/if_heldout.jsonl"
    eval_limit: int | None = None
    eval_max_new_tokens: int = 1280
    eval_batch_size: int = 16
    analysis_prompts: int | None = None
    analysis_reward: str | None = "ifeval_strict"
    dtype: str = "auto"  # for evaluation and analysis
    heldout: str | None = None  # held-out constraint prompts, evaluated greedily into final/heldout
    skip: tuple[str, ...] = ()  # steps left out, from SKIPPABLE_STEPS
    smoothing_window: int = DEFAULT_SMOOTHING_WINDOW  # of the report's curves
    eval_engine: str = DEFAULT_ENGINE  # the decode loop of the evaluations (IFEval, held-out, IFBench) and the analysis
    ifbench: bool = False  # also IFBench's 300 prompts, greedy, responses only (final/ifbench)
    # AAPA discriminator folders that score each analysis's samples (final/analysis/discriminators.json): how
    # expert-like a fixed discriminator finds every run, whether or not it trained against one
    discriminators: tuple[str, ...] = ()


# "report": for several compare commands that fill one grid side by side (one per CPU lane): each would rewrite
# OUT/report with only its own runs, at the same time as the others; one last command reports on them all.
RESULT_STEPS = ("heldout", "ifeval", "ifbench", "analyze", "discriminators")  # in the order they run, after training
SKIPPABLE_STEPS = (*RESULT_STEPS, "report")


IFBENCH_DIR = "ifbench"
# the result steps every compare call so far asked of a run: a snapshot of the run (scripts/repro/publish.py) is
# complete only when all of them are there, not when training ends
REQUESTED_STEPS_FILE = "compare_steps.json"


def run_dir(out: Path, algorithm: str, seed: int) -> Path:
    return out / f"{algorithm}-seed{seed}"


def run_config(config_path: str | Path, out: Path, algorithm: str, seed: int, overrides: tuple[str, ...]):
    """The shared config with only the algorithm, seed and output folder changed."""
    from uniapl.config import UniAPLConfig

    per_run = [f"algorithm.name={algorithm}", f"training.seed={seed}", f"training.output_dir={run_dir(out, algorithm, seed)}"]
    return UniAPLConfig.from_yaml(config_path, overrides=[*overrides, *per_run])


def result_paths(run: Path) -> dict[str, Path]:
    """Each result step's JSON, written when the step ends."""
    final = run / "final"
    return {"heldout": final / HELDOUT_DIR / EVAL_JSON, "ifeval": final / EVAL_JSON, "ifbench": final / IFBENCH_DIR / IFBENCH_SUMMARY,
            "analyze": final / "analysis" / ANALYSIS_JSON, "discriminators": final / "analysis" / DISCRIMINATORS_JSON}


def record_requested_steps(run: Path, steps: list[str]) -> None:
    path = run / REQUESTED_STEPS_FILE
    recorded = read_json(path)["steps"] if path.is_file() else []
    write_json_atomic(path, {"steps": [name for name in RESULT_STEPS if name in {*recorded, *steps}]})


def missing_results(run: Path) -> list[str]:
    """The result steps asked of `run` whose result is not there yet (none for a run no compare call recorded)."""
    path = run / REQUESTED_STEPS_FILE
    paths = result_paths(run)
    return [name for name in read_json(path)["steps"] if not paths[name].is_file()] if path.is_file() else []


def train_run(config) -> None:
    """Train, or continue an interrupted run from its last checkpoint (from step 0 where it has none)."""
    from uniapl.train.trainer import UniAPLTrainer

    UniAPLTrainer(args=config).train(resume=True)


def evaluate_run(final: Path, settings: CompareSettings, data: str | None = None, out_dir: Path | None = None) -> None:
    """IFEval (or, with `data`, another constraint-prompt file such as the held-out split), greedy."""
    from uniapl.ifeval import run_ifeval

    run_ifeval(str(final), out_dir=str(out_dir or final), limit=None if data else settings.eval_limit, batch_size=settings.eval_batch_size,
               dtype=settings.dtype, max_new_tokens=settings.eval_max_new_tokens, data=data, engine=settings.eval_engine)


def ifbench_run(final: Path, settings: CompareSettings) -> None:
    """IFBench's prompts, greedy, into final/ifbench: responses for whoever has its checkers."""
    from uniapl.ifeval.ifbench import run_ifbench

    run_ifbench(str(final), final / IFBENCH_DIR, batch_size=settings.eval_batch_size, dtype=settings.dtype,
                max_new_tokens=settings.eval_max_new_tokens, engine=settings.eval_engine)


def analysis_settings(settings: CompareSettings) -> AnalysisSettings:
    return AnalysisSettings(sampling=SamplingParams(max_new_tokens=settings.eval_max_new_tokens), dtype=settings.dtype, limit=settings.analysis_prompts,
                            batch_size=settings.eval_batch_size, reward=settings.analysis_reward, engine=settings.eval_engine)


def analyze_run(final: Path, settings: CompareSettings) -> None:
    from uniapl.analysis.analyze import analyze_model

    analyze_model(str(final), settings.expert, final / "analysis", settings=analysis_settings(settings))


def discriminators_run(final: Path, settings: CompareSettings) -> None:
    from uniapl.analysis.discriminators import analyze_discriminators

    analyze_discriminators(final / "analysis", settings.discriminators, settings.expert, limit=settings.analysis_prompts)


def eval_request(settings: CompareSettings, data: str | None = None, ifbench: bool = False) -> dict:
    """What an IFEval, held-out or IFBench result depends on, under the names its JSON records them (the default
    engine is not recorded)."""
    from uniapl.ifeval.ifbench import load_ifbench
    from uniapl.ifeval.prompts import load_ifeval

    n_prompts = len(load_ifbench()) if ifbench else len(load_ifeval(data, None if data else settings.eval_limit))
    request = {"max_new_tokens": settings.eval_max_new_tokens, "dtype": settings.dtype, "n_prompts": n_prompts}
    return request if settings.eval_engine == DEFAULT_ENGINE else {**request, "engine": settings.eval_engine}


def analysis_request(settings: CompareSettings) -> dict:
    """What an analysis depends on, as its JSON records it; the batch size only splits the work."""
    request = {"expert_file": settings.expert, "settings": recorded_settings(analysis_settings(settings))}
    del request["settings"]["batch_size"]
    return json.loads(json.dumps(request))


def discriminators_request(settings: CompareSettings) -> dict:
    """Each discriminator under its name in discriminators.json, and the folder it was read from."""
    return {Path(folder).name: {"folder": str(folder)} for folder in settings.discriminators}


def result_done(path: Path, request: dict, every_key: bool = False) -> bool:
    """Whether the result JSON at `path` exists; one that records other settings than `request` is an error.

    A key the saved result lacks is not checked, so results made before a setting was recorded still count;
    with `every_key` such a result is not done (a discriminator asked for since is scored again, in seconds).
    """
    if not path.is_file():
        return False
    saved = flatten(read_json(path))
    if every_key and not set(flatten(request)) <= set(saved):
        return False
    changed = {k: (saved[k], v) for k, v in flatten(request).items() if k in saved and saved[k] != v}
    if changed:
        raise UniaplError(f"{path} was made with other settings {changed} (old, new); pass another --out, "
                          f"or delete that file to redo the step")
    return True


def check_discriminators(settings: CompareSettings) -> None:
    """Before any training: the discriminators score the analysis's samples, so they need it, and their folders."""
    from uniapl.anchor.folder import read_meta

    if "analyze" in settings.skip:
        raise UniaplError("--discriminator scores the analysis's samples; it cannot run with --skip analyze")
    names = [Path(folder).name for folder in settings.discriminators]
    if len(set(names)) < len(names):
        raise UniaplError(f"--discriminator: two folders share a name ({', '.join(names)}); the results are kept under their names")
    for folder in settings.discriminators:
        read_meta(folder, "--discriminator")


def compare(config_path: str | Path, out: str | Path, settings: CompareSettings, log: Callable[[str], None] = print) -> Path | None:
    """Every step that has not been done yet, then the report; returns the report folder (None when skipped)."""
    out = Path(out)
    if not settings.algorithms or not settings.seeds:
        raise UniaplError("compare needs at least one algorithm and one seed")
    unknown = sorted(set(settings.skip) - set(SKIPPABLE_STEPS))
    if unknown:
        raise UniaplError(f"--skip: unknown step '{unknown[0]}'; steps that can be skipped: {', '.join(SKIPPABLE_STEPS)}")
    if "analyze" not in settings.skip and not Path(settings.expert).is_file():
        raise UniaplError(f"expert file '{settings.expert}' does not exist; the analysis of each run needs it (--expert)")
    if "heldout" not in settings.skip and settings.heldout and not Path(settings.heldout).is_file():
        raise UniaplError(f"held-out prompts '{settings.heldout}' do not exist (--heldout)")
    if settings.discriminators and "discriminators" not in settings.skip:
        check_discriminators(settings)
    # build every config first, so a bad algorithm name or override fails before hours of training
    configs = {(a, s): run_config(config_path, out, a, s, settings.overrides) for a in settings.algorithms for s in settings.seeds}
    wanted = {"heldout": bool(settings.heldout), "ifbench": settings.ifbench, "discriminators": bool(settings.discriminators)}
    steps = [name for name in RESULT_STEPS if name not in settings.skip and wanted.get(name, True)]
    requests = {name: analysis_request(settings) if name == "analyze" else discriminators_request(settings) if name == "discriminators"
                else eval_request(settings, settings.heldout if name == "heldout" else None, ifbench=name == "ifbench") for name in steps}
    for (algorithm, seed), config in configs.items():
        run = run_dir(out, algorithm, seed)
        final = run / "final"
        heldout = final / HELDOUT_DIR
        results = result_paths(run)
        record_requested_steps(run, steps)
        actions = {"train": lambda: train_run(config), "heldout": lambda: evaluate_run(final, settings, data=settings.heldout, out_dir=heldout),
                   "ifeval": lambda: evaluate_run(final, settings), "ifbench": lambda: ifbench_run(final, settings),
                   "analyze": lambda: analyze_run(final, settings), "discriminators": lambda: discriminators_run(final, settings)}
        done = {name: result_done(results[name], requests[name], every_key=name == "discriminators") for name in steps}
        # a run restored from its published results, without weights, is not trained again; the discriminators
        # score the analysis's samples, not the model
        needs_model = [name for name in steps if name != "discriminators"]
        done = {"train": (final / "config.json").is_file() or (bool(needs_model) and all(done[name] for name in needs_model)), **done}
        for name, finished in done.items():
            if finished:
                log(f"{run.name}: {name}: already done, skipped")
            else:
                log(f"{run.name}: {name}")
                actions[name]()
    if "report" in settings.skip:
        return None
    report = out / "report"
    write_report([run_dir(out, a, s) for a, s in configs], report, settings.smoothing_window)
    log(f"report: {report / 'report.md'}, {report / 'report.html'}")
    return report
