"""Side-by-side report of training runs: `report.md` (with PNG files) and a self-contained `report.html`.

A run folder holds `config.yaml`, `metrics.jsonl` and `final/`, with the IFEval scores at
`final/ifeval_scores.json` and the analysis at `final/analysis/analysis.json`. A plain model folder
(one with `config.json`) also counts as a run, with its results beside the weights. Anything a run
lacks is shown as "missing", never as 0, so an unevaluated run cannot pass for a bad one.

Runs whose configs differ only in the seed form a group; groups of several seeds get mean and
standard error in the tables and a mean curve with a +-1 standard error band in the plots.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from uniapl import metric_names as M
from uniapl.analysis import DEFAULT_SMOOTHING_WINDOW
from uniapl.analysis.analyze import ANALYSIS_JSON, LENGTH_PNG, LOGPROB_PNG
from uniapl.analysis.discriminators import DISCRIMINATORS_JSON, histogram_file
from uniapl.analysis.distributions import mean_and_standard_error
from uniapl.analysis.plots import CurveFigure, CurveLine, Series, curve_figure
from uniapl.config import flatten, load_yaml
from uniapl.errors import UniaplError
from uniapl.io import read_json, read_jsonl

MISSING = "missing"
ABSENT = "—"  # a config key one run does not have
EVAL_JSON = "ifeval_scores.json"
HELDOUT_DIR = "heldout"
# config keys that differ between seeds of the same experiment by construction
PER_RUN_KEYS = {"training.seed", "training.output_dir"}


# --- loading runs ---------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    label: str
    config: dict | None
    metrics: list[dict]
    eval: dict | None
    heldout: dict | None  # the held-out split's scores (final/heldout), the figures tuning may look at
    analysis: dict | None
    analysis_dir: Path
    finished: bool
    discriminators: dict | None = None  # AAPA's discriminators on this run's analysis (analysis/discriminators.json)

    @property
    def flat_config(self) -> dict:
        return flatten(self.config or {})


def _read_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def distinct_labels(paths: list[Path]) -> list[str]:
    """The runs' folder names, or as many trailing path parts as it takes to tell them apart
    (runs/lr3e-6/grpo-seed0 and runs/lr1e-5/grpo-seed0 become lr3e-6/grpo-seed0 and lr1e-5/grpo-seed0)."""
    parts = [p.resolve().parts for p in paths]
    repeated = next((p for p, q in zip(paths, parts) if parts.count(q) > 1), None)
    if repeated is not None:
        raise UniaplError(f"run folder '{repeated}' is given twice")
    depth = 1
    while len({q[-depth:] for q in parts}) < len(parts):  # ends: at full depth they are the distinct paths
        depth += 1
    return [Path(*q[-depth:]).as_posix() for q in parts]


def load_run(path: str | Path, label: str) -> Run:
    """Everything a report shows about one run folder; parts that do not exist are None or empty."""
    path = Path(path)
    if not path.is_dir():
        raise UniaplError(f"run folder '{path}' does not exist")
    is_model_folder = (path / "config.json").is_file() and not (path / "final").exists()
    results_dir = path if is_model_folder else path / "final"
    config = load_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else None
    metrics = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    analysis_dir = results_dir / "analysis"
    results = {"eval": _read_json(results_dir / EVAL_JSON), "heldout": _read_json(results_dir / HELDOUT_DIR / EVAL_JSON),
               "analysis": _read_json(analysis_dir / ANALYSIS_JSON)}
    return Run(
        path=path,
        label=label,
        config=config if isinstance(config, dict) else None,
        metrics=metrics,
        **results,
        analysis_dir=analysis_dir,
        # results of the final model mean training finished, also where the weights were not kept (a restored run)
        finished=(results_dir / "config.json").is_file() or any(r is not None for r in results.values()),
        discriminators=_read_json(analysis_dir / DISCRIMINATORS_JSON),
    )


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)


def group_by_config(runs: list[Run]) -> list[Group]:
    """Runs whose configs are equal apart from seed and output folder; a run without a config stands alone."""
    groups: dict[str, Group] = {}
    for run in runs:
        if run.config is None:
            signature = f"no-config:{run.path.resolve()}"
        else:
            signature = json.dumps({k: v for k, v in run.flat_config.items() if k not in PER_RUN_KEYS}, sort_keys=True, default=str)
        groups.setdefault(signature, Group(label="")).runs.append(run)
    for group in groups.values():
        stems = {re.sub(r"-seed\d+$", "", r.label) for r in group.runs}
        group.label = stems.pop() if len(stems) == 1 else " + ".join(r.label for r in group.runs)
    return list(groups.values())


# --- table columns ----------------------------------------------------------------------------------


class TableColumn(Protocol):
    header: str
    percent: bool

    def value(self, run: Run) -> float | None: ...


@dataclass(frozen=True)
class Column:
    """A number in a run's eval or analysis JSON, found by a path of keys."""

    header: str
    source: str  # "eval", "heldout" or "analysis"
    keys: tuple[str, ...]
    percent: bool = False

    def value(self, run: Run) -> float | None:
        node = getattr(run, self.source)
        for key in self.keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _length(side: str, stat: str) -> tuple[str, ...]:
    return ("length_tokens", side, stat)


EVAL_COLUMNS = [
    Column("prompt strict %", "eval", ("prompt_level_strict_acc",), percent=True),
    Column("inst strict %", "eval", ("inst_level_strict_acc",), percent=True),
    Column("prompt loose %", "eval", ("prompt_level_loose_acc",), percent=True),
    Column("inst loose %", "eval", ("inst_level_loose_acc",), percent=True),
    Column("prompts", "eval", ("n_prompts",)),
    Column("mean length (tokens)", "eval", ("mean_length_tokens",)),
    Column("IFEval echo %", "eval", ("degeneration", "echo_rate"), percent=True),
    Column("IFEval repetition %", "eval", ("degeneration", "repetition_rate"), percent=True),
    Column("IFEval truncation %", "eval", ("degeneration", "truncation_rate"), percent=True),
]
HELDOUT_COLUMNS = [
    Column("held-out reward", "heldout", ("mean_partial_reward",)),
    Column("held-out prompt strict %", "heldout", ("prompt_level_strict_acc",), percent=True),
    Column("held-out inst strict %", "heldout", ("inst_level_strict_acc",), percent=True),
    Column("held-out prompts", "heldout", ("n_prompts",)),
    Column("held-out mean length (tokens)", "heldout", ("mean_length_tokens",)),
]
DISTRIBUTION_COLUMNS = [
    Column("length mean", "analysis", _length("policy", "mean")),
    Column("expert length mean", "analysis", _length("expert", "mean")),
    Column("length median", "analysis", _length("policy", "median")),
    Column("length p90", "analysis", _length("policy", "p90")),
    Column("length W1", "analysis", ("length_tokens", "distance", "wasserstein_1")),
    Column("length KS", "analysis", ("length_tokens", "distance", "ks_statistic")),
    Column("log-prob mean", "analysis", ("mean_token_logprob", "policy", "mean")),
    Column("expert NLL", "analysis", ("expert_nll",)),
    Column("log-prob W1", "analysis", ("mean_token_logprob", "distance", "wasserstein_1")),
    Column("log-prob KS", "analysis", ("mean_token_logprob", "distance", "ks_statistic")),
]
DEGENERATION_COLUMNS = [
    Column("echo %", "analysis", ("degeneration", "policy", "echo_rate"), percent=True),
    Column("repetition %", "analysis", ("degeneration", "policy", "repetition_rate"), percent=True),
    Column("distinct-2", "analysis", ("degeneration", "policy", "distinct_2")),
    Column("truncation %", "analysis", ("degeneration", "policy", "truncation_rate"), percent=True),
    Column("empty %", "analysis", ("degeneration", "policy", "empty_rate"), percent=True),
    Column("verifier pass %", "analysis", ("verifier", "policy", "pass_rate"), percent=True),
    Column("expert verifier pass %", "analysis", ("verifier", "expert", "pass_rate"), percent=True),
]


@dataclass(frozen=True)
class CurveSummary:
    """A training curve as one number: its mean over the first or the last `window` steps that logged it.

    The start and end of a curve are what tells why a run ended where it did (did the reward rise, where
    lambda settled, whether the discriminator still told expert from policy), without reading the plots.
    """

    header: str
    key: str
    from_end: bool
    window: int
    percent: bool = False

    def value(self, run: Run) -> float | None:
        curve = run_curve(run, self.key)
        if not curve:
            return None
        steps = sorted(curve)
        chosen = steps[-self.window :] if self.from_end else steps[: self.window]
        return sum(curve[s] for s in chosen) / len(chosen)


@dataclass(frozen=True)
class StepsLogged:
    header: str = "steps logged"
    percent: bool = False

    def value(self, run: Run) -> float | None:
        steps = [row["step"] for row in run.metrics if isinstance(row.get("step"), int)]
        return max(steps) if steps else None


def dynamics_columns(window: int) -> list[TableColumn]:
    first, last = f"first {window}", f"last {window}"
    return [
        StepsLogged(),
        CurveSummary(f"reward, {first}", M.REWARD_MEAN, False, window),
        CurveSummary(f"reward, {last}", M.REWARD_MEAN, True, window),
        CurveSummary(f"length, {last}", M.LENGTH_MEAN, True, window),
        CurveSummary(f"truncated %, {last}", M.TRUNCATED_FRAC, True, window, percent=True),
        CurveSummary(f"entropy, {last}", M.ENTROPY, True, window),
        CurveSummary("lambda, last", M.LAMBDA, True, 1),
        CurveSummary(f"C_batch, {last}", M.C_BATCH, True, window),
        CurveSummary("epsilon", M.EPSILON, True, 1),
        CurveSummary(f"disc acc expert %, {last}", M.DISC_ACC_EXPERT, True, window, percent=True),
        CurveSummary(f"disc acc policy %, {last}", M.DISC_ACC_POLICY, True, window, percent=True),
        CurveSummary(f"r_adv, {last}", M.ADV_REWARD_MEAN, True, window),
        CurveSummary(f"anchor score, {first}", M.ANCHOR_SCORE_MEAN, False, window),
        CurveSummary(f"anchor score, {last}", M.ANCHOR_SCORE_MEAN, True, window),
    ]


CURVE_FIGURES = [
    CurveFigure("curve_reward.png", "Reward (mean over rollouts)", ((Series(M.REWARD_MEAN, "reward"),),)),
    CurveFigure(
        "curve_lambda.png",
        "Lagrange multiplier, and the expert NLL C_batch against its budget epsilon",
        ((Series(M.LAMBDA, "lambda"),), (Series(M.C_BATCH, "C_batch"), Series(M.EPSILON, "epsilon", "--"))),
    ),
    CurveFigure(
        "curve_discriminator.png",
        "Discriminator accuracy (solid: on expert, dashed: on policy)",
        ((Series(M.DISC_ACC_EXPERT, "on expert"), Series(M.DISC_ACC_POLICY, "on policy", "--")),),
    ),
    CurveFigure("curve_r_adv.png", "Adversarial reward r_adv (mean)", ((Series(M.ADV_REWARD_MEAN, "r_adv"),),)),
    CurveFigure(
        "curve_anchor.png",
        "AAPA's fixed discriminator: its logit on the rollouts (solid) and on fixed held-out expert responses (dashed)",
        ((Series(M.ANCHOR_SCORE_MEAN, "on rollouts"), Series(M.ANCHOR_HELDOUT_EXPERT, "held-out expert", "--")),),
    ),
    CurveFigure("curve_length.png", "Response length (mean tokens)", ((Series(M.LENGTH_MEAN, "length"),),)),
    CurveFigure("curve_entropy.png", "Policy entropy on its rollouts (mean per token)", ((Series(M.ENTROPY, "entropy"),),)),
    CurveFigure("curve_kl.png", "KL to the reference policy", ((Series(M.KL, "KL"),),)),
    CurveFigure(
        "curve_clip.png",
        "Clipped token fraction (solid: low, dashed: high)",
        ((Series(M.CLIP_LOW_FRAC, "low"), Series(M.CLIP_HIGH_FRAC, "high", "--")),),
    ),
]


def format_number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return MISSING
    if percent:
        return f"{100 * value:.2f}"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def format_mean(values: list[float | None], percent: bool = False) -> str:
    """'mean ± stderr (n=k)'; 'n=k of m' when some runs lack the number. Percentages keep two decimals,
    like every IFEval score here; other numbers are rounded to their error's second significant digit."""
    stats = mean_and_standard_error(values)
    if stats["mean"] is None:
        return MISSING
    mean, stderr = stats["mean"], stats["stderr"]
    if stderr is None:
        text = format_number(mean, percent)
    elif percent or stderr == 0:
        text = f"{format_number(mean, percent)} ± {format_number(stderr, percent)}"
    else:  # the error to two significant digits and the mean to the same decimal place, as results are quoted
        decimals = max(0, 1 - math.floor(math.log10(stderr)))
        text = f"{mean:.{decimals}f} ± {stderr:.{decimals}f}"
    count = f"n={stats['n']}" if stats["n"] == len(values) else f"n={stats['n']} of {len(values)}"
    return f"{text} ({count})"


# --- document blocks, rendered once as Markdown and once as HTML ------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    caption: str


Block = Heading | Paragraph | Table | Image


def run_table(runs: list[Run], columns: list[TableColumn]) -> Table:
    return Table(["run"] + [c.header for c in columns], [[r.label] + [format_number(c.value(r), c.percent) for c in columns] for r in runs])


def group_table(groups: list[Group], columns: list[TableColumn]) -> Table:
    return Table(
        ["runs"] + [c.header for c in columns],
        [[g.label] + [format_mean([c.value(r) for r in g.runs], c.percent) for c in columns] for g in groups],
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def run_curve(run: Run, key: str) -> dict[float, float]:
    return {row["step"]: float(row[key]) for row in run.metrics if "step" in row and _finite(row.get(key))}


def group_curve(group: Group, key: str) -> CurveLine | None:
    """One run's curve as it is; several seeds as the mean at the steps they all logged, +-1 standard error."""
    curves = [c for c in (run_curve(r, key) for r in group.runs) if c]
    if not curves:
        return None
    if len(curves) == 1:
        steps = sorted(curves[0])
        return CurveLine(steps, [curves[0][s] for s in steps])
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    stats = [mean_and_standard_error([c[s] for c in curves]) for s in steps]
    means = [s["mean"] for s in stats]
    errors = [s["stderr"] for s in stats]
    return CurveLine(steps, means, ([m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)]))


def config_differences(runs: list[Run]) -> Table | None:
    """Config keys whose values differ between runs (the output folder aside); None when all agree."""
    with_config = [r for r in runs if r.config is not None]
    flats = [r.flat_config for r in with_config]
    keys = sorted({k for f in flats for k in f} - {"training.output_dir"})
    differing = [k for k in keys if len({json.dumps(f.get(k, ABSENT), sort_keys=True, default=str) for f in flats}) > 1]
    if not differing:
        return None
    return Table(["key"] + [r.label for r in with_config], [[k] + [_config_cell(f, k) for f in flats] for k in differing])


def _config_cell(flat: dict, key: str) -> str:
    if key not in flat:
        return ABSENT
    value = flat[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def build_blocks(runs: list[Run], out_dir: Path, smoothing_window: int) -> list[Block]:
    """The report's content; figures are written into `out_dir` as they are made."""
    groups = group_by_config(runs)
    pooled = [g for g in groups if len(g.runs) > 1]
    blocks: list[Block] = [Heading(1, f"Comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}")]
    blocks.append(
        Table(
            ["run", "folder", "finished", "IFEval", "analysis"],
            [
                [r.label, str(r.path), "yes" if r.finished else "no", "present" if r.eval else MISSING, "present" if r.analysis else MISSING]
                for r in runs
            ],
        )
    )
    blocks.append(Paragraph(f'"{MISSING}" means the run has no such result yet; it is not a score of 0.'))

    sections = [
        ("IFEval", "Accuracies in percent, from each run's ifeval_scores.json; echo, repetition and truncation of the "
         "IFEval responses.", EVAL_COLUMNS),
        ("Held-out split", "Greedy responses to the held-out training-style prompts (final/heldout), scored by the same "
         "checkers; the mean reward is the mean ifeval_partial.", HELDOUT_COLUMNS),
        (
            "Length and log-prob against the expert",
            "Lengths in completion tokens including EOS. Log-prob: the mean per-token log-prob of each response "
            "under the policy; 'expert NLL' is minus that mean on the expert's demonstrations (the constraint C). "
            "W1: Wasserstein-1 distance between the policy's and the expert's distributions; KS: the two-sample "
            "Kolmogorov-Smirnov statistic (0 = same distribution, 1 = disjoint).",
            DISTRIBUTION_COLUMNS,
        ),
        (
            "Signs of reward hacking and degeneration",
            "Echo: the response repeats the prompt. Repetition: distinct-2 below 0.5. Truncation: hit max_new_tokens. "
            "Verifier pass: the reward function scored 1.",
            DEGENERATION_COLUMNS,
        ),
    ]
    for title, note, columns in sections:
        blocks += [Heading(2, title), Paragraph(note), run_table(runs, columns)]
        if pooled:
            blocks += [Paragraph("Mean ± standard error across seeds:"), group_table(groups, columns)]

    blocks += [
        Heading(2, "Training dynamics"),
        Paragraph(
            f"From metrics.jsonl: each curve's mean over the first or last {smoothing_window} steps that logged it "
            "(a two-stage run's first rewards are those of its RL stage); lambda and epsilon at the last step that logged "
            "them (for a two-stage run, the end of its SFT stage). "
            f"Here \"{MISSING}\" also means the algorithm does not log that number (GRPO has no lambda, only UniAPL "
            "has a discriminator)."
        ),
        run_table(runs, dynamics_columns(smoothing_window)),
    ]
    if pooled:
        blocks += [Paragraph("Mean ± standard error across seeds:"), group_table(groups, dynamics_columns(smoothing_window))]

    blocks.append(Heading(2, "Training curves"))
    if pooled:
        blocks.append(Paragraph("Seeds of one configuration are drawn as their mean, with a band of ±1 standard error."))
    if smoothing_window > 1:
        blocks.append(Paragraph(f"Solid lines: the trailing mean over {smoothing_window} steps; faint lines: each step's value."))
    not_logged = []
    for figure in CURVE_FIGURES:
        lines = {g.label: {k: line for k in figure.keys if (line := group_curve(g, k)) is not None} for g in groups}
        lines = {label: by_key for label, by_key in lines.items() if by_key}
        if not lines:
            not_logged.append(figure.title)
            continue
        blocks.append(Image(curve_figure(figure, lines, out_dir / figure.filename, smoothing_window), figure.title))
    if not_logged:
        blocks.append(Paragraph("Not logged by any run: " + "; ".join(not_logged) + "."))

    blocks += [Heading(2, "Policy against expert"), Paragraph("Overlaid histograms from each run's analysis (blue: policy, orange: expert).")]
    for run in runs:
        if run.analysis is None:
            blocks.append(Paragraph(f"{run.label}: analysis {MISSING}."))
            continue
        for png, what in ((LENGTH_PNG, "response length"), (LOGPROB_PNG, "per-token log-prob")):
            if (run.analysis_dir / png).is_file():
                copy = out_dir / f"{run.label.replace('/', '__')}_{png}"
                shutil.copyfile(run.analysis_dir / png, copy)
                blocks.append(Image(copy, f"{run.label}: {what}"))
            else:
                blocks.append(Paragraph(f"{run.label}: {what} plot {MISSING}."))

    blocks += discriminator_blocks(runs, out_dir)
    blocks.append(Heading(2, "Config differences"))
    differences = config_differences(runs)
    without_config = [r.label for r in runs if r.config is None]
    if differences is not None:
        blocks.append(differences)
    else:
        blocks.append(Paragraph("The runs' configs agree apart from their output folders."))
    if without_config:
        blocks.append(Paragraph(f"config.yaml {MISSING} for: {', '.join(without_config)}."))
    return blocks


def discriminator_blocks(runs: list[Run], out_dir: Path) -> list[Block]:
    """AAPA's discriminator variants: for each run analyzed with them, each one's held-out AUC and its mean logit on
    the expert's, the start policy's and the run's responses, and their histograms."""
    scored = [r for r in runs if r.discriminators]
    if not scored:
        return []
    rows = []
    for run in scored:
        for name, d in run.discriminators.items():
            means = [format_number(d["scores"][side]["mean"]) for side in ("expert", "start_policy", "policy")]
            rows.append([run.label, name, f"{d['variant']}, {d['granularity']}{', with prompt' if d['include_prompt'] else ''}",
                         format_number(d["heldout_auc"]), *means, format_number(d["policy_vs_expert"]["wasserstein_1"])])
    blocks: list[Block] = [
        Heading(2, "Discriminator variants"),
        Paragraph("AAPA's fixed discriminators (`uniapl analyze --discriminator`, or `uniapl compare --discriminator` for every "
                  "run of a grid): held-out ROC AUC from their offline training; "
                  "mean logit on the expert's held-out demonstrations, on the start policy's responses (the discriminator's "
                  "held-out negatives) and on this run's samples; W1 between this run's and the expert's logits."),
        Table(["run", "discriminator", "variant", "held-out AUC", "expert", "start policy", "this policy", "W1 to expert"], rows),
    ]
    for run in scored:
        for name in run.discriminators:
            png = run.analysis_dir / histogram_file(name)
            if png.is_file():
                copy = out_dir / f"{run.label.replace('/', '__')}_{histogram_file(name)}"
                shutil.copyfile(png, copy)
                blocks.append(Image(copy, f"{run.label}: discriminator {name}"))
    return blocks


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_markdown_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{block.caption}]({block.path.relative_to(out_dir).as_posix()})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


_STYLE = """
body { font-family: sans-serif; max-width: 1300px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
figure { margin: 1em 0; }
figcaption { font-style: italic; color: #555; }
img { max-width: 100%; }
"""


def render_html(blocks: list[Block]) -> str:
    """One file with every image embedded as base64, so it can be mailed or archived alone."""
    esc = html.escape
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}"><figcaption>{esc(block.caption)}</figcaption></figure>')
    title = next((b.text for b in blocks if isinstance(b, Heading)), "uniapl report")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(run_dirs: list[str | Path], out_dir: str | Path, smoothing_window: int = DEFAULT_SMOOTHING_WINDOW) -> list[Run]:
    """Write report.md (next to its PNGs) and the self-contained report.html into `out_dir`.

    Curves are drawn as trailing means over `smoothing_window` steps (1: as logged).
    """
    if not run_dirs:
        raise UniaplError("give at least one run folder to report on")
    if smoothing_window < 1:
        raise UniaplError(f"the smoothing window must be a whole number of steps, 1 or more (1: no smoothing); got {smoothing_window}")
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, label) for p, label in zip(paths, distinct_labels(paths))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(runs, out_dir, smoothing_window)
    (out_dir / "report.md").write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks), encoding="utf-8")
    return runs
