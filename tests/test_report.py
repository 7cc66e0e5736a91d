"""`uniapl report` on synthetic run folders: tables match the JSON files, missing results say so, plots are real."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from matplotlib.axes import Axes
from PIL import Image
from markdown_tables import cell, table_with
from synthetic_runs import analysis_result, eval_scores, make_run

from uniapl.analysis.plots import CurveFigure, CurveLine, Series, curve_figure, trailing_mean
from uniapl.analysis.report import distinct_labels, format_mean, write_report
from uniapl.cli import main


@pytest.fixture
def runs(tmp_path):
    scores_a, scores_b = eval_scores(0.25, 0.375), eval_scores(0.125, 0.5)
    return {
        "a": make_run(tmp_path, "uniapl-seed1", "uniapl", 1, scores_a, analysis_result([10, 12, 30], [11, 13, 15])),
        # results without weights (restored from published results): finished all the same
        "b": make_run(tmp_path, "grpo-seed1", "grpo", 1, scores_b, None, with_discriminator=False, finished=False),
        "c": make_run(tmp_path, "grpo-seed2", "grpo", 2, None, None, with_discriminator=False, finished=False),
        "scores": {"uniapl-seed1": scores_a, "grpo-seed1": scores_b},
    }


def test_ifeval_table_matches_eval_jsons_and_missing_eval_shows_missing(runs, tmp_path):
    out = tmp_path / "report"
    write_report([runs["a"], runs["b"], runs["c"]], out)
    text = (out / "report.md").read_text()
    table = table_with(text, "prompt strict %")
    keys = {"prompt strict %": "prompt_level_strict_acc", "inst strict %": "inst_level_strict_acc",
            "prompt loose %": "prompt_level_loose_acc", "inst loose %": "inst_level_loose_acc"}
    for run, scores in runs["scores"].items():
        for column, key in keys.items():
            assert float(cell(table, run, column)) == pytest.approx(100 * scores[key], abs=0.005)
        assert cell(table, run, "prompts") == "20"
    assert all(cell(table, "grpo-seed2", column) == "missing" for column in keys)
    runs_table = table_with(text, "finished")
    assert cell(runs_table, "grpo-seed2", "finished") == "no"
    assert cell(runs_table, "grpo-seed1", "finished") == "yes"
    assert cell(runs_table, "grpo-seed2", "IFEval") == "missing"
    assert cell(runs_table, "grpo-seed1", "analysis") == "missing"


def test_seeds_are_pooled_with_mean_and_standard_error(runs, tmp_path):
    out = tmp_path / "report"
    write_report([runs["a"], runs["b"], runs["c"]], out)
    text = (out / "report.md").read_text()
    pooled = table_with(text, "prompt strict %", index=1)
    # grpo has two seeds, one without an eval: the mean is over the one present, and says so
    assert cell(pooled, "grpo", "prompt strict %") == "12.50 (n=1 of 2)"
    assert cell(pooled, "uniapl", "prompt strict %") == "25.00 (n=1)"


def test_mean_and_standard_error_over_complete_seeds(tmp_path):
    values = [0.2, 0.3, 0.7]
    run_dirs = [make_run(tmp_path, f"sft-seed{s}", "sft", s, eval_scores(v, 0.5)) for s, v in zip((1, 2, 3), values)]
    write_report(run_dirs, tmp_path / "report")
    pooled = table_with((tmp_path / "report" / "report.md").read_text(), "prompt strict %", index=1)
    mean = 100 * statistics.mean(values)
    stderr = 100 * statistics.stdev(values) / len(values) ** 0.5
    assert cell(pooled, "sft", "prompt strict %") == f"{mean:.2f} ± {stderr:.2f} (n=3)"


@pytest.mark.parametrize("values, percent, expected", [  # standard error d: two seeds m ± d, three m and m ± d√3
    ([0.4271 - 0.02958, 0.4271 + 0.02958], False, "0.427 ± 0.030 (n=2)"),
    ([228 - 5.384 * 3**0.5, 228, 228 + 5.384 * 3**0.5], False, "228.0 ± 5.4 (n=3)"),
    ([1000.0, 1300.0], False, "1150 ± 150 (n=2)"),
    ([0.5, 0.5], False, "0.5 ± 0 (n=2)"),
    ([0.2, 0.25, None], True, "22.50 ± 2.50 (n=2 of 3)"),
    ([0.4567], False, "0.4567 (n=1)"),
])
def test_a_mean_is_quoted_to_its_standard_error(values, percent, expected):
    assert format_mean(values, percent) == expected


def test_analysis_numbers_and_config_differences(runs, tmp_path):
    out = tmp_path / "report"
    write_report([runs["a"], runs["b"]], out)
    text = (out / "report.md").read_text()
    distributions = table_with(text, "length W1")
    assert float(cell(distributions, "uniapl-seed1", "length mean")) == pytest.approx(statistics.mean([10, 12, 30]), rel=1e-3)
    assert float(cell(distributions, "uniapl-seed1", "length median")) == 12
    # W1 between [10, 12, 30] and [11, 13, 15] with equal sizes: mean |sorted difference|
    assert float(cell(distributions, "uniapl-seed1", "length W1")) == pytest.approx((1 + 1 + 15) / 3, rel=1e-3)
    assert cell(distributions, "grpo-seed1", "length W1") == "missing"
    degeneration = table_with(text, "truncation %")
    assert cell(degeneration, "uniapl-seed1", "truncation %") == "66.67"
    assert cell(degeneration, "uniapl-seed1", "verifier pass %") == "missing"
    config = table_with(text, "key")
    assert cell(config, "algorithm.name", "uniapl-seed1") == "uniapl"
    assert cell(config, "algorithm.name", "grpo-seed1") == "grpo"
    assert "training.output_dir" not in config[1]


def test_curves_are_real_images_and_absent_metrics_are_named(runs, tmp_path):
    out = tmp_path / "report"
    write_report([runs["a"], runs["b"]], out)
    text = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"curve_reward.png", "curve_discriminator.png", "curve_entropy.png"} <= set(images)
    assert "uniapl-seed1_length_hist.png" in images
    assert "curve_kl.png" not in images
    not_logged = re.search(r"Not logged by any run: (.*)\.", text).group(1).split("; ")
    assert "KL to the reference policy" in not_logged
    for name in images:
        path = out / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 500
            assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 20  # not a blank canvas
    page = (out / "report.html").read_text()
    assert page.count("<img ") == len(images)
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []


def test_training_dynamics_summarise_the_start_and_end_of_each_curve(runs, tmp_path):
    # synthetic metrics, steps 1-5: reward 0.1 * step + 0.01 * seed, lambda 1 / step, disc/acc_policy 0.5 + 0.05 * step
    out = tmp_path / "report"
    write_report([runs["a"], runs["b"], runs["c"]], out, smoothing_window=2)
    text = (out / "report.md").read_text()
    table = table_with(text, "reward, last 2")
    assert cell(table, "uniapl-seed1", "steps logged") == "5"
    assert float(cell(table, "uniapl-seed1", "reward, first 2")) == pytest.approx(0.16)
    assert float(cell(table, "uniapl-seed1", "reward, last 2")) == pytest.approx(0.46)
    assert float(cell(table, "uniapl-seed1", "lambda, last")) == pytest.approx(0.2)
    assert cell(table, "uniapl-seed1", "disc acc policy %, last 2") == "72.50"
    assert cell(table, "grpo-seed1", "disc acc policy %, last 2") == "missing"
    pooled = table_with(text, "reward, last 2", index=1)
    assert cell(pooled, "grpo", "reward, last 2") == "0.4650 ± 0.0050 (n=2)"


def test_cli_reports_and_rejects_a_missing_folder(runs, tmp_path, capsys):
    out = tmp_path / "cli-report"
    assert main(["report", str(runs["a"]), str(runs["c"]), "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_plain_model_folder_reports_the_results_beside_its_weights(tmp_path):
    model = tmp_path / "base-model"
    (model / "analysis").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "ifeval_scores.json").write_text(json.dumps(eval_scores(0.5, 0.625)))
    (model / "analysis" / "analysis.json").write_text(json.dumps(analysis_result([5, 6, 7], [5, 6, 8])))
    write_report([model], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert cell(table_with(text, "prompt strict %"), "base-model", "prompt strict %") == "50.00"
    assert cell(table_with(text, "length W1"), "base-model", "length mean") == "6"
    assert "config.yaml missing for: base-model." in text
    assert "Not logged by any run: Reward (mean over rollouts);" in text


def test_trailing_mean_never_looks_ahead():
    values = [4.0, 0.0, 2.0, 6.0, 1.0]
    assert trailing_mean(values, 3) == pytest.approx([4.0, 2.0, 2.0, 8 / 3, 3.0])
    assert trailing_mean(values, 1) == values
    assert trailing_mean(values[:3] + [100.0, 100.0], 3)[:3] == trailing_mean(values, 3)[:3]


def test_curves_draw_the_trailing_mean_over_the_logged_values(monkeypatch, tmp_path):
    drawn = []
    original_plot = Axes.plot

    def recording_plot(self, x, y, *args, **kwargs):
        drawn.append((kwargs.get("label"), list(y)))
        return original_plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    figure = CurveFigure("reward.png", "reward", ((Series("reward/mean", "reward"),),))
    rewards = [0.0, 1.0, 0.0, 1.0, 0.5]
    curve_figure(figure, {"grpo": {"reward/mean": CurveLine([1, 2, 3, 4, 5], rewards)}}, tmp_path / "reward.png", 2)
    assert drawn == [(None, rewards), ("grpo", [0.0, 0.5, 0.5, 0.5, 0.75])]


def test_cli_smoothing_is_stated_and_validated(runs, tmp_path, capsys):
    out = tmp_path / "cli-report"
    assert main(["report", str(runs["a"]), "--out", str(out)]) == 0
    assert "Solid lines: the trailing mean over 5 steps" in (out / "report.md").read_text()
    assert main(["report", str(runs["a"]), "--out", str(out), "--smooth", "1"]) == 0
    assert "trailing mean" not in (out / "report.md").read_text()
    assert main(["report", str(runs["a"]), "--out", str(out), "--smooth", "0"]) == 2
    assert "--smooth must be at least 1, got 0" in capsys.readouterr().err


def test_runs_of_one_name_in_different_folders_are_told_apart_by_their_parents(tmp_path):
    analysis = analysis_result([10, 12, 30], [11, 13, 15])
    run_dirs = [make_run(tmp_path, f"{lr}/grpo-seed1", "grpo", 1, eval_scores(score, 0.5), analysis)
                for lr, score in (("lr3e-6", 0.25), ("lr1e-5", 0.5))]
    out = tmp_path / "report"
    write_report(run_dirs, out)
    text = (out / "report.md").read_text()
    table = table_with(text, "prompt strict %")
    assert cell(table, "lr3e-6/grpo-seed1", "prompt strict %") == "25.00"
    assert cell(table, "lr1e-5/grpo-seed1", "prompt strict %") == "50.00"
    assert "lr1e-5__grpo-seed1_length_hist.png" in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert distinct_labels([tmp_path / "a" / "x", tmp_path / "b" / "y"]) == ["x", "y"]
