"""Every figure a run or a report writes, drawn on tiny data: tick labels never overlap, integer axes have
integer ticks, each PNG has a PDF beside it, and each figure shows what a reader needs (the selected epoch,
λ = 0 on its own labelled axis, the validation-selected λ, the ground truth's singular values)."""
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import lambdaopt.figures.spectrum as completion_figures
import lambdaopt.figures.lambdas as lambda_figures
import lambdaopt.report.figures as report_figures
from lambdaopt.figures.style import save as real_save
from lambdaopt.report import label_runs

from builders import fake_runs

DRAWN = {}


def shown_tick_labels(ax, axis):
    """The tick labels drawn inside the axes' span (a locator may place ticks beyond the view limits)."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    low, high = (box.x0, box.x1) if axis.axis_name == "x" else (box.y0, box.y1)
    labels = []
    for label in [*axis.get_ticklabels(), *axis.get_ticklabels(minor=True)]:
        if not (label.get_visible() and label.get_text()):
            continue
        extent = label.get_window_extent(renderer)
        middle = (extent.x0 + extent.x1) / 2 if axis.axis_name == "x" else (extent.y0 + extent.y1) / 2
        if low - 1 <= middle <= high + 1:
            labels.append((label.get_text(), extent))
    return labels


def overlapping_tick_labels(fig):
    """(axes title, label, label) for every pair of tick labels on one axis whose boxes intersect."""
    fig.canvas.draw()
    clashes = []
    for ax in [*fig.axes, *(child for ax in fig.axes for child in ax.child_axes)]:
        for axis in (ax.xaxis, ax.yaxis):
            for (text_a, a), (text_b, b) in itertools.combinations(shown_tick_labels(ax, axis), 2):
                if a.shrunk(0.98, 0.98).overlaps(b.shrunk(0.98, 0.98)):
                    clashes.append((ax.get_title(), text_a, text_b))
    return clashes


@pytest.fixture(autouse=True)
def checked_save(monkeypatch):
    """Every figure goes through plotting.save: check it there, before it is written and closed."""
    def save(fig, path):
        assert overlapping_tick_labels(fig) == [], path
        DRAWN[path.name if hasattr(path, "name") else str(path).rsplit("/", 1)[-1]] = fig
        written = real_save(fig, path)
        FigureCanvasAgg(fig).draw()  # closing detached its canvas: a fresh one, for the tests' own look
        return written

    for module in (lambda_figures, report_figures, completion_figures):
        monkeypatch.setattr(module, "save", save, raising=False)
    import lambdaopt.evaluation.completion  # noqa: F401  (its log_to imports save from lambdaopt.figures.style)
    monkeypatch.setattr("lambdaopt.figures.style.save", save)
    DRAWN.clear()


def integer_labels(axis):
    return all(text.lstrip("−-").isdigit() for text, _ in shown_tick_labels(axis.axes, axis))


def lambda_history(n_users=300, n_items=200, epochs=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)):
    """Counts spanning under two decades on the user side (the case whose labels once collided)."""
    rng = np.random.default_rng(0)
    counts = {"user": rng.integers(20, 700, n_users), "item": rng.integers(0, 300, n_items)}
    means = {role: [np.log1p(counts[role]) * 1e-3 * e / len(epochs) + rng.random(len(counts[role])) * 1e-4
                    for e in epochs] for role in counts}
    return list(epochs), means, counts, {"user": True, "item": True}


def test_lambdaopt_figures(tmp_path):
    epochs, means, counts, per_entity = lambda_history()
    path = lambda_figures.plot_trajectories(epochs, means, counts, per_entity, tmp_path / "t.png", selected_epoch=7)
    assert path.exists() and path.with_suffix(".pdf").exists()
    fig = DRAWN["t.png"]
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("Q1, rarest: ") and labels[3].startswith("Q4, most frequent: ")
    assert "selected epoch 7" in labels and len(fig.axes[0].get_lines()) == 5  # 4 quartiles + the marker
    assert integer_labels(fig.axes[0].xaxis)
    lambda_figures.plot_lambda_vs_frequency(epochs, means, counts, per_entity, tmp_path / "f.png", selected_epoch=7)
    assert DRAWN["f.png"].axes[0].get_title() == "users, λ at epoch 7 (selected)"


def test_report_figures(tmp_path):
    runs = label_runs(fake_runs())
    report_figures.lambda_sensitivity(runs, ["ndcg_at_10", "ndcg_at_10"], tmp_path / "s.png")
    fig = DRAWN["s.png"]
    zero_axis = fig.axes[0]
    assert [t.get_text() for t in zero_axis.get_xticklabels()] == ["0"] and fig.axes[1].get_xscale() == "log"
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)  # one legend, below
    assert "λ selected on validation" in [t.get_text() for t in fig.legends[0].get_texts()]
    ringed = [line for line in fig.axes[1].get_lines() if line.get_label() == "λ selected on validation"]
    assert [tuple(line.get_xdata()) for line in ringed] == [(0.01,)]  # fake_runs: 0.01 is best on validation
    history = pd.DataFrame({"step": [1, 2, 3] * 2, "key": ["reg/user/lambda_mean"] * 3 + ["reg/item/lambda_mean"] * 3,
                            "value": [0.1, 0.2, 0.25, 0.3, 0.1, 0.05]})
    report_figures.lambda_trajectories({"MF-λOpt-DUI": history}, tmp_path / "t.png")
    assert all(ax.get_ylabel() and integer_labels(ax.xaxis) for ax in DRAWN["t.png"].axes)
    deep = pd.DataFrame([{"params.model.depth": str(d), "params.model.init_scale": s,
                          "metrics.test/relative_error": 1e-2 / d, "metrics.test/effective_rank": 5.0 + d}
                         for d in (2, 3, 4) for s in ("1e-3", "1e-6")])
    report_figures.deep_mf(deep, tmp_path / "d.png")
    assert all(integer_labels(ax.xaxis) for ax in DRAWN["d.png"].axes)


def test_singular_values_figure(tmp_path):
    from lambdaopt.evaluation.completion import SpectrumTrajectory, next_on_log_grid, on_log_grid

    assert [s for s in range(40) if on_log_grid(s)] == [0, 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32]
    grid = [s for s in range(200_001) if on_log_grid(s)]
    assert [next_on_log_grid(s) for s in range(grid[-1])] == [g for a, g in zip(grid, grid[1:]) for _ in range(a, g)]
    truth = np.array([9.0, 5.0, 2.0, 0.0])
    trajectory = SpectrumTrajectory(top_k=4, truth_sigma=truth, steps_per_epoch=100)
    import torch

    for step in [s for s in range(0, 1001) if on_log_grid(s) or s % 100 == 0]:
        grown = truth * (1 - np.exp(-step / np.array([30.0, 120.0, 400.0, 1e9]))) + 1e-3
        trajectory.record(step, torch.tensor(grown))
    class Tracker:
        run_id = "x"
        logged = []

        def log_file(self, path, artifact_dir=None):
            self.logged.append(path.name if hasattr(path, "name") else str(path).rsplit("/", 1)[-1])

    tracker = Tracker()
    trajectory.log_to(tracker, "deep MF")
    assert sorted(tracker.logged) == ["singular_values.parquet", "singular_values.pdf", "singular_values.png"]
    fig = DRAWN["singular_values.png"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["σ1", "σ2", "σ3", "σ4", "ground truth σ(W*)"]  # one entry per drawn series
    ax = fig.axes[0]
    assert min(line.get_xdata()[0] for line in ax.get_lines()[:4]) == 0  # from the initialization on
    assert len([line for line in ax.get_lines() if line.get_linestyle() == ":"]) == 3  # σ_i(W*) > 0 only
