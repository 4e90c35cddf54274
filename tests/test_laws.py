"""Compression laws: the fit recovers known exponents, its uncertainty is calibrated, the critical
ratio matches the paper, and ``core laws sweep / fit / predict`` work end to end on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from typer.testing import CliRunner

from prunekit import hookimpl
from prunekit.cli import app
from prunekit.errors import UsageError
from prunekit.plugins.laws import LawForm, Point, critical_ratio, fit_law, fit_points, read_fit
from prunekit.plugins.laws.analysis import leave_one_ratio_out
from prunekit.plugins.laws.points import point_from_report
from prunekit.payloads import Metrics, Recovery

from conftest import assert_one_line_error

runner = CliRunner()

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
SIZES = (0, 100, 1000, 4000)
PAPER_LOSS = {"alpha": 0.63, "beta": 1.72, "gamma": 1.16}
PAPER_ACCURACY = {"alpha": 0.98, "beta": -1.03, "gamma": -0.14}


def law(l0, r, d, alpha, beta, gamma=0.0):
    return l0**alpha * (1 + r) ** beta * (1 + 1 / (d + 1)) ** gamma


def synthetic(truth, baselines, noise, seed, sizes=SIZES):
    """Every (model, ratio, D) of a grid, scored by the law with log-normal noise."""
    rng = np.random.default_rng(seed)
    l0, r, d = (np.array(v, dtype=float).ravel() for v in np.meshgrid(baselines, RATIOS, sizes, indexing="ij"))
    return l0, r, d, law(l0, r, d, **truth) * np.exp(rng.normal(0, noise, l0.shape))


# --- the fit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("truth", "baselines"), [(PAPER_LOSS, [2.1, 2.6, 3.2]), (PAPER_ACCURACY, [0.45, 0.55, 0.7])])
def test_the_full_fit_recovers_known_exponents_from_noisy_data(truth, baselines):
    fit = fit_law(*synthetic(truth, baselines, noise=0.02, seed=1), LawForm.FULL)
    for name, value in truth.items():
        error = abs(fit.coefficients[name] - value)
        assert error < 4 * fit.standard_errors[name], (name, fit.coefficients[name], fit.standard_errors[name])
        assert error < 0.05, (name, fit.coefficients[name])
    assert fit.points == 60 and fit.adj_r2 > 0.99 and fit.adj_r2_centered > 0.9


def test_noiseless_data_is_fitted_exactly():
    fit = fit_law(*synthetic(PAPER_LOSS, [2.5, 3.0], noise=0.0, seed=0), LawForm.FULL)
    assert fit.coefficients == pytest.approx(PAPER_LOSS, abs=1e-10)
    assert fit.r2 == pytest.approx(1) and fit.adj_r2_centered == pytest.approx(1)
    assert max(fit.standard_errors.values()) < 1e-8


def test_the_reduced_forms_recover_their_own_laws():
    without_d = fit_law(*synthetic({"alpha": 0.74, "beta": 2.02}, [2.5, 3.1], 0.01, seed=2), LawForm.WITHOUT_D)
    assert set(without_d.coefficients) == {"alpha", "beta"}
    assert without_d.coefficients == pytest.approx({"alpha": 0.74, "beta": 2.02}, abs=0.03)
    without_r = fit_law(*synthetic({"alpha": 0.9, "beta": 0.0, "gamma": 0.5}, [2.5, 3.1], 0.01, seed=3),
                        LawForm.WITHOUT_R)
    assert without_r.coefficients == pytest.approx({"alpha": 0.9, "gamma": 0.5}, abs=0.03)


def test_standard_errors_match_the_spread_of_repeated_fits():
    """Calibration: across many noisy data sets the estimates scatter by the reported SE."""
    fits = [fit_law(*synthetic(PAPER_LOSS, [2.8], noise=0.05, seed=seed, sizes=(0, 1000)), LawForm.FULL)
            for seed in range(400)]
    for name in PAPER_LOSS:
        spread = np.std([f.coefficients[name] for f in fits])
        reported = np.mean([f.standard_errors[name] for f in fits])
        assert reported == pytest.approx(spread, rel=0.15), name


def test_prediction_intervals_cover_new_measurements_at_their_level():
    covered = []
    rng = np.random.default_rng(7)
    for seed in range(200):
        fit = fit_law(*synthetic(PAPER_LOSS, [2.8], noise=0.05, seed=seed, sizes=(0, 1000)), LawForm.FULL)
        low, high = fit.prediction_interval(2.8, 0.6, 500)
        new = law(2.8, 0.6, 500, **PAPER_LOSS) * math.exp(rng.normal(0, 0.05))
        covered.append(low <= new <= high)
    assert 0.9 <= np.mean(covered) <= 0.99


def test_r2_definitions_by_hand():
    """Uncentered R² through the origin (as the paper and statsmodels report it) and centered R²."""
    l0, r, d = np.full(5, math.e), np.array(RATIOS), np.zeros(5)
    score = np.exp([1.2, 1.5, 1.6, 2.1, 2.2])
    fit = fit_law(l0, r, d, score, LawForm.WITHOUT_D)
    y = np.log(score)
    x = np.column_stack([np.ones(5), np.log1p(r)])
    rss = float(((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum())
    assert fit.r2 == pytest.approx(1 - rss / (y**2).sum())
    assert fit.adj_r2 == pytest.approx(1 - (1 - fit.r2) * 5 / 3)
    assert fit.adj_r2_centered == pytest.approx(1 - rss / ((y - y.mean()) ** 2).sum() * 4 / 3)
    assert fit.residual_variance == pytest.approx(rss / 3)


def test_one_recovery_size_cannot_separate_gamma_from_alpha():
    l0, r, d, score = synthetic(PAPER_LOSS, [2.8], noise=0.01, seed=0, sizes=(0,))
    with pytest.raises(UsageError, match="cannot separate the exponents of the full law"):
        fit_law(l0, r, d, score, LawForm.FULL)
    assert fit_law(l0, r, d, score, LawForm.WITHOUT_D).points == 5


@pytest.mark.parametrize(
    ("score", "message"),
    [([1.0, 2.0, 0.0, 1.5], "every score and L0 must be positive"), ([1.0, 2.0], "needs more than 2 points")],
)
def test_unfittable_points(score, message):
    n = len(score)
    with pytest.raises(UsageError, match=message):
        fit_law([2.0] * n, RATIOS[:n], [0] * n, score, LawForm.WITHOUT_D)


def test_critical_ratio_matches_the_papers_worked_example():
    assert critical_ratio(-1.18, 0.8) == pytest.approx(0.208, abs=5e-4)
    r_star = critical_ratio(-1.03, 0.9)
    assert (1 + r_star) ** -1.03 == pytest.approx(0.9)  # the ratio where (1 + r)^β reaches σ


@pytest.mark.parametrize(("beta", "retention", "message"), [(-1.0, 0.0, "retention"), (0.0, 0.8, "β = 0")])
def test_critical_ratio_rejects_what_has_no_answer(beta, retention, message):
    with pytest.raises(UsageError, match=message):
        critical_ratio(beta, retention)


def test_prediction_validates_its_inputs():
    fit = fit_law(*synthetic(PAPER_LOSS, [2.8], noise=0.01, seed=0), LawForm.FULL)
    assert fit.predict(2.8, 0.5, 1000) == pytest.approx(law(2.8, 0.5, 1000, **PAPER_LOSS), rel=0.02)
    with pytest.raises(UsageError, match="needs the recovery data size"):
        fit.predict(2.8, 0.5)
    with pytest.raises(UsageError, match=r"ratio must be in \[0, 1\)"):
        fit.predict(2.8, 1.2, 0)


def test_leave_one_ratio_out_is_exact_on_law_data_and_not_on_other_curves():
    l0, r, d, score = synthetic(PAPER_LOSS, [2.8], noise=0.0, seed=0, sizes=(0, 1000))
    exact = leave_one_ratio_out(l0, r, d, score, LawForm.FULL)
    assert set(exact.errors) == {"0.1", "0.3", "0.5", "0.7", "0.9"} and exact.max < 1e-9
    bent = score * np.exp(3 * (r - 0.5) ** 2)  # a curve the law cannot follow
    assert leave_one_ratio_out(l0, r, d, bent, LawForm.FULL).mean > 0.05


# --- points, the fit report and the CLI --------------------------------------------------------


def make_points(truth_loss=PAPER_LOSS, truth_accuracy=PAPER_ACCURACY, model="m", l0=(2.8, 0.55), sizes=(0, 1000)):
    rng = np.random.default_rng(0)
    return [
        Point(model=model, ratio=r, recover_size=d,
              loss=law(l0[0], r, d, **truth_loss) * math.exp(rng.normal(0, 0.01)), baseline_loss=l0[0],
              accuracy=law(l0[1], r, d, **truth_accuracy) * math.exp(rng.normal(0, 0.01)), baseline_accuracy=l0[1],
              tasks={}, baseline_tasks={}, run=f"points/r{r:g}-d{d}")
        for d in sizes for r in RATIOS
    ]


def test_point_from_a_run_report_uses_log_perplexity_and_compares_like_for_like(tmp_path):
    report = {
        "model": "tiny-llama", "ratio": 0.3,
        "metrics": {
            "before": {"perplexity": 20.0, "tasks": {
                "piqa": {"acc": 0.6, "acc_norm": 0.62}, "winogrande": {"acc,none": 0.5},
                "arc_easy": {"acc": 0.7, "acc_norm": 0.66}, "only_before": {"acc": 0.9}}},
            "after": {"perplexity": 30.0, "tasks": {
                "piqa": {"acc": 0.55, "acc_norm": 0.58}, "winogrande": {"acc,none": 0.4}, "arc_easy": {"acc": 0.5}}},
        },
    }
    point = point_from_report(report, 1000, tmp_path)
    assert point.loss == pytest.approx(math.log(30)) and point.baseline_loss == pytest.approx(math.log(20))
    # primary metric: acc_norm where both stages report it (piqa), else acc; tasks of both stages only
    assert point.tasks == {"arc_easy": 0.5, "piqa": 0.58, "winogrande": 0.4}
    assert point.baseline_tasks == {"arc_easy": 0.7, "piqa": 0.62, "winogrande": 0.5}
    assert point.accuracy == pytest.approx(1.48 / 3) and point.baseline_accuracy == pytest.approx(1.82 / 3)
    assert point.recover_size == 1000
    assert point_from_report(report, 0, tmp_path, metric="acc").tasks == {"arc_easy": 0.5, "piqa": 0.55, "winogrande": 0.4}
    assert point_from_report(report, 0, tmp_path, metric="f1").accuracy is None


def test_point_prefers_the_evaluators_loss_and_primary_metric(tmp_path):
    stage = {"perplexity": 20.0, "loss": 2.9, "tasks": {"piqa": {"acc": 0.6, "acc_norm": 0.62}},
             "primary_metric": {"piqa": "acc"}}
    point = point_from_report({"model": "m", "ratio": 0.5, "metrics": {"before": stage, "after": stage}}, 0, tmp_path)
    assert point.loss == 2.9 and point.tasks == {"piqa": 0.6}


def test_fit_points_fits_every_form_for_both_metrics_and_derives_r_star():
    report = fit_points(make_points(), ["test"], retention=0.8)
    assert set(report.laws) == {"loss", "accuracy"}
    assert set(report.laws["loss"]) == set(LawForm)
    assert report.laws["loss"][LawForm.FULL].coefficients == pytest.approx(PAPER_LOSS, abs=0.1)
    beta = report.laws["accuracy"][LawForm.FULL].coefficients["beta"]
    assert report.critical_ratio[LawForm.FULL] == pytest.approx(0.8 ** (1 / beta) - 1)
    assert report.leave_one_ratio_out["loss"][LawForm.FULL].mean < 0.03
    assert report.baselines == {"m": {"loss": 2.8, "accuracy": 0.55}}
    prediction = report.predict("loss", 0.4, 1000)
    assert prediction.form == LawForm.FULL
    assert prediction.value == pytest.approx(law(2.8, 0.4, 1000, **PAPER_LOSS), rel=0.03)
    assert prediction.interval[0] < prediction.value < prediction.interval[1]
    assert report.predict("accuracy", 0.4).form == LawForm.WITHOUT_D


def test_a_sweep_at_one_recovery_size_records_why_the_full_law_is_missing():
    report = fit_points(make_points(sizes=(0,)), ["test"])
    assert set(report.laws["loss"]) == {LawForm.WITHOUT_D}
    assert "cannot separate" in report.unfitted["loss"][LawForm.FULL]
    with pytest.raises(UsageError, match="no full law for loss: the points cannot separate"):
        report.predict("loss", 0.5, 100)


def test_a_fit_across_models_needs_the_model_or_its_baseline():
    points = make_points(model="a", l0=(2.5, 0.5)) + make_points(model="b", l0=(3.2, 0.6))
    report = fit_points(points, ["a", "b"])
    with pytest.raises(UsageError, match=r"several models \(a, b\)"):
        report.predict("loss", 0.5)
    assert report.predict("loss", 0.5, model="b").baseline == 3.2
    assert report.predict("loss", 0.5, baseline=4.0).baseline == 4.0
    with pytest.raises(UsageError, match="the fit has no model 'c'"):
        report.predict("loss", 0.5, model="c")


@pytest.fixture
def results_file(tmp_path):
    from prunekit.plugins.laws.points import write_points

    path = tmp_path / "sweep" / "results.json"
    path.parent.mkdir()
    write_points(make_points(), path)
    return path


def test_cli_fit_writes_json_and_plot_and_predict_reads_them(results_file):
    result = runner.invoke(app, ["laws", "fit", str(results_file.parent)])
    assert result.exit_code == 0, result.output
    assert "critical ratio (full accuracy law, σ = 0.8)" in result.stdout and "without_r" in result.stdout
    fit_file = results_file.parent / "fit.json"
    assert (results_file.parent / "fit.png").stat().st_size > 10_000
    report = read_fit(fit_file)
    assert report == fit_points(make_points(), [str(results_file.parent)])

    result = runner.invoke(app, ["laws", "predict", "--fit", str(fit_file), "--ratio", "0.4",
                                 "--recover-size", "1000", "--json"])
    assert result.exit_code == 0, result.output
    predicted = {row["metric"]: row for row in json.loads(result.stdout)}
    assert predicted["loss"]["value"] == pytest.approx(report.predict("loss", 0.4, 1000).value)
    assert predicted["accuracy"]["form"] == "full"

    result = runner.invoke(app, ["laws", "predict", "--fit", str(fit_file), "--ratio", "0.4"])
    assert result.exit_code == 0, result.output
    assert "without_d" in result.stdout and "perplexity" in result.stdout


def test_cli_fit_json_and_output_directory(results_file, tmp_path):
    result = runner.invoke(app, ["laws", "fit", str(results_file), "--output", str(tmp_path / "elsewhere"),
                                 "--retention", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["retention"] == 0.9
    assert (tmp_path / "elsewhere" / "fit.json").is_file()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fit", "{tmp}/missing.json"], ["no results at", "missing.json"]),
        (["fit", "{tmp}/garbage.json"], ["is not a laws results file", "Invalid JSON"]),
        (["fit", "{results}", "--retention", "0"], ["retention σ must be positive"]),
        (["predict", "--fit", "{tmp}/none.json", "--ratio", "0.3"], ["fit file not found"]),
        (["predict", "--fit", "{fit}", "--ratio", "1.3"], ["ratio must be in [0, 1)"]),
        (["predict", "--fit", "{fit}", "--ratio", "0.3", "--recover-size", "-5"], ["recovery data size must be >= 0"]),
        (["predict", "--fit", "{fit}", "--ratio", "0.3", "--model", "other"], ["the fit has no model 'other'"]),
        (["predict", "--fit", "{fit}", "--ratio", "0.3", "--baseline-loss", "-1"], ["L0 must be positive"]),
        (["predict", "--fit", "{garbage}", "--ratio", "0.3"], ["is not a laws fit file"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(results_file, tmp_path, args, fragments):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    fit_file = tmp_path / "fit.json"
    fit_file.write_text(fit_points(make_points(), ["test"]).model_dump_json())
    values = {"tmp": tmp_path, "results": results_file, "fit": fit_file, "garbage": garbage}
    result = runner.invoke(app, ["laws", *(arg.format(**values) for arg in args)])
    assert_one_line_error(result, "Error: ", *fragments)


# --- the sweep ------------------------------------------------------------------------------------


class Probe:
    """A test evaluator that measures the tiny model for real: cross-entropy on fixed random tokens
    (as perplexity) and the mean probability of the right next token (as a task's ``acc``)."""

    def __init__(self) -> None:
        self.calls = 0  # compressed models measured (stage "after"): one per point that ran
        self.tokens = torch.randint(0, 257, (4, 32), generator=torch.Generator().manual_seed(0))

    @hookimpl
    def evaluate(self, request):
        self.calls += request.stage == "after"
        with torch.no_grad():
            logits = request.model(self.tokens).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.tokens[:, 1:].reshape(-1))
        right = logits.softmax(-1).gather(-1, self.tokens[:, 1:, None]).mean()
        return Metrics(perplexity=math.exp(loss.item()), tasks={"probe": {"acc": right.item()}})


class FakeRecoveryOptions(BaseModel):
    samples: int = 0


class FakeRecovery:
    """Records the recovery data size each run gives it and returns the model unchanged."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    @hookimpl
    def plugin_options(self):
        return FakeRecoveryOptions

    @hookimpl
    def recover(self, request):
        self.sizes.append(FakeRecoveryOptions.model_validate(request.options("fakerecover")).samples)
        return Recovery(request.model, report={"samples": self.sizes[-1]})


@pytest.fixture
def sweep_plugins(register_plugin):
    probe, recovery = Probe(), FakeRecovery()
    register_plugin(probe, "probe")
    register_plugin(recovery, "fakerecover")
    return probe, recovery


def sweep(out, *extra):
    return runner.invoke(app, ["laws", "sweep", "--model", "tiny-llama", "--plugins", "random,probe",
                               "--recovery", "fakerecover.samples", "--output", str(out), *extra])


def test_sweep_runs_the_grid_through_the_pipeline_fits_and_resumes(sweep_plugins, tmp_path):
    probe, recovery = sweep_plugins
    out = tmp_path / "sweep"
    result = sweep(out, "--ratios", "0.2,0.5,0.8", "--recover-sizes", "0,16", "--json")
    assert result.exit_code == 0, result.output
    assert probe.calls == 6 and sorted(recovery.sizes) == [16, 16, 16]  # recovery only where D > 0

    points = json.loads((out / "results.json").read_text())
    assert [(p["ratio"], p["recover_size"]) for p in points] == [
        (0.2, 0), (0.5, 0), (0.8, 0), (0.2, 16), (0.5, 16), (0.8, 16)]
    first = json.loads((out / "points" / "r0.2-d0" / "report.json").read_text())
    assert points[0]["loss"] == pytest.approx(math.log(first["metrics"]["after"]["perplexity"]))
    assert points[0]["accuracy"] == first["metrics"]["after"]["tasks"]["probe"]["acc"]
    assert len({p["baseline_loss"] for p in points}) == 1
    [step] = json.loads((out / "points" / "r0.5-d16" / "report.json").read_text())["recovery"]
    assert step["plugin"] == "fakerecover" and step["report"] == {"samples": 16}
    assert not list(out.glob("points/*/model")), "models are removed once their report is written"

    fit = json.loads(result.stdout)
    assert fit == json.loads((out / "fit.json").read_text()) and (out / "fit.png").is_file()
    assert fit["points"] == 6 and "full" in fit["laws"]["loss"]

    # Rerunning the same command reruns nothing; a wider grid runs only the new points.
    assert sweep(out, "--ratios", "0.2,0.5,0.8", "--recover-sizes", "0,16").exit_code == 0
    assert probe.calls == 6
    result = sweep(out, "--ratios", "0.2,0.5,0.8,0.65", "--recover-sizes", "0,16")
    assert result.exit_code == 0, result.output
    assert probe.calls == 8 and "finished earlier, reused" in result.stderr
    assert len(json.loads((out / "results.json").read_text())) == 8


def test_a_sweep_too_small_to_fit_still_prints_a_json_document(sweep_plugins, tmp_path):
    result = sweep(tmp_path / "sweep", "--ratios", "0.3", "--recover-sizes", "0", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["fitted"] is False and document["points"] == 1 and document["reason"]
    assert "Not fitted yet" in result.stderr


def test_an_interrupted_point_is_run_again(sweep_plugins, tmp_path):
    probe, _ = sweep_plugins
    out = tmp_path / "sweep"
    assert sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0", "--keep-models").exit_code == 0
    assert (out / "points" / "r0.3-d0" / "model" / "config.json").is_file()
    (out / "points" / "r0.6-d0" / "report.json").unlink()  # killed after saving the model
    result = sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0", "--keep-models")
    assert result.exit_code == 0, result.output
    assert probe.calls == 3 and (out / "points" / "r0.6-d0" / "report.json").is_file()


def test_default_sweep_directory_is_fixed_so_the_same_command_resumes(tmp_path):
    from prunekit.config import RunConfig
    from prunekit.plugins.laws.sweep import default_directory

    config = RunConfig(model="org/model", plugins=["prunenet", "lora"])
    assert str(default_directory(config)) == "runs/laws-org_model-prunenet+lora"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--ratios", "0.2,1.0"], ["sweep ratios must be in (0, 1), got 1"]),
        (["--ratios", "0.2,abc"], ["--ratios takes comma-separated float values"]),
        (["--recover-sizes", "0,-3"], ["recovery sizes must be >= 0, got -3"]),
        (["--recovery", "fakerecover"], ["expected PLUGIN.KEY"]),
        (["--recovery", "fakerecover.steps"], ["fakerecover has no option 'steps'; its options: samples"]),
        (["--recovery", "random.samples"], ["'random', which does not implement recover"]),
        (["--plugins", "probe"], ["a sweep needs a pruner"]),
        (["--plugins", "random,nope"], ["unknown plugin 'nope'"]),
    ],
)
def test_sweep_bad_input_exits_2_before_running_anything(sweep_plugins, tmp_path, args, fragments):
    probe, _ = sweep_plugins
    base = {"--ratios": "0.2,0.5", "--recover-sizes": "0,16", "--recovery": "fakerecover.samples",
            "--plugins": "random,probe"}
    base.update(zip(args[::2], args[1::2]))
    result = runner.invoke(app, ["laws", "sweep", "--model", "tiny-llama", "--output", str(tmp_path / "s"),
                                 *(part for item in base.items() for part in item)])
    assert_one_line_error(result, "Error: ", *fragments)
    assert probe.calls == 0 and not (tmp_path / "s").exists()


def test_resuming_with_other_settings_is_refused(sweep_plugins, tmp_path):
    out = tmp_path / "sweep"
    assert sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0").exit_code == 0
    result = sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0", "--seed", "5")
    assert_one_line_error(result, "holds a sweep with other settings (run.seed)")


def test_a_config_field_added_since_the_sweep_started_is_not_a_changed_setting(sweep_plugins, tmp_path):
    probe, _ = sweep_plugins
    out = tmp_path / "sweep"
    assert sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0").exit_code == 0
    settings = json.loads((out / "sweep.json").read_text())
    del settings["run"]["ratios"]  # as a sweep started before RunConfig had the field recorded it
    (out / "sweep.json").write_text(json.dumps(settings))
    assert sweep(out, "--ratios", "0.3,0.6", "--recover-sizes", "0").exit_code == 0
    assert probe.calls == 2


def test_a_config_with_per_dimension_ratios_is_refused(sweep_plugins, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("ratios: {ffn: 0.5}\n")
    result = sweep(tmp_path / "s", "--config", str(config))
    assert_one_line_error(result, "a sweep sets every point's ratio itself")
