"""Runs from MLflow into a pandas DataFrame, each labeled with the table row it belongs to."""
from __future__ import annotations

import os
from typing import Iterable

import pandas as pd

from lambdaopt.errors import ReportError
from lambdaopt.naming import model_name
from lambdaopt.registry import REGULARIZERS
from lambdaopt.tracking import store_uri

# Keys that name a repetition, not a configuration: runs differing only here are seeds of one row.
SEED_KEYS = {"params.seed", "params.regularizer.seed"}
IGNORED_PREFIXES = ("params.tracking.",)
# What a tuned baseline is tuned over besides its regularizer's own `tuned_keys` (lambdaopt/conf/sweep/mf_baseline.yaml):
# runs of a regularizer with tuned keys that differ only in these are grid points of one row, and the report
# selects one per seed on validation (table.select_grid_points).
TUNED_PREFIXES = ("params.optimizer.", "params.model.item_bias", "params.model.init_std",
                  "params.trainer.batch_size", "params.trainer.patience", "params.trainer.max_epochs")


def load_runs(uri: str, experiment: str, parent: str | None = None,
              tags: Iterable[tuple[str, str]] = ()) -> pd.DataFrame:
    """FINISHED runs of `experiment` (children of `parent`, with every tag in `tags`), one row per run,
    columns as `mlflow.search_runs` names them (`metrics.test/auc`, `params.seed`, `tags.overrides`).
    Sweep parent runs are left out."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        raise ReportError(f"no MLflow database at {uri[len('sqlite:///'):]}: run an experiment first, or pass --uri")
    uri = store_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ReportError(f"no experiment '{experiment}' in {uri} (experiments there: {names})")
    filters = [f"tags.`mlflow.parentRunId` = '{parent}'"] if parent else []
    filters += [f"tags.`{key}` = '{value}'" for key, value in tags]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs([found.experiment_id], filter_string=" and ".join(filters), max_results=50000,
                              output_format="pandas")
    if "tags.sweep_role" in runs:
        runs = runs[runs["tags.sweep_role"] != "parent"]
    where = f"experiment '{experiment}'" + (f" under parent run {parent}" if parent else "") + \
        "".join(f" with tag {k}={v}" for k, v in tags)
    if runs.empty:
        raise ReportError(f"no runs in {where}")
    finished = runs[runs["status"] == "FINISHED"]
    if finished.empty:
        statuses = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
        raise ReportError(f"no FINISHED runs in {where} ({statuses})")
    return finished.reset_index(drop=True)


def _regularizer_params(run: pd.Series) -> dict[str, str]:
    prefix = "params.regularizer."
    return {k[len(prefix):]: v for k, v in run.items() if k.startswith(prefix) and isinstance(v, str)}


def _base_label(run: pd.Series) -> str:
    """`MF-λFix`, `MF-λOpt-DUI`: the registered model's and regularizer's display names."""
    model = model_name(run.get("tags.model") or "?")
    name = run.get("tags.regularizer") or "?"
    regularizer = REGULARIZERS.by_class.get(name)
    return f"{model}-{regularizer.display_name(_regularizer_params(run)) if regularizer is not None else name}"


def tuned_prefixes(run: pd.Series) -> tuple[str, ...]:
    """The parameters a grid row of this run's regularizer is tuned over (empty: not a grid)."""
    regularizer = REGULARIZERS.by_class.get(run.get("tags.regularizer") or "")
    keys = regularizer.tuned_keys if regularizer is not None else ()
    return tuple(f"params.regularizer.{k}" for k in keys) + TUNED_PREFIXES if keys else ()


def label_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `row` (the table row: model, regularizer, and whatever else differs between runs of the same
    kind, e.g. `lr=0.1`), `seed`, `is_grid` (a fixed-λ grid point: λ and the other TUNED_PREFIXES keys are
    then selected per seed) and `lam`."""
    order = pd.to_numeric(runs.get("tags.job_num", pd.Series(index=runs.index, dtype=float)), errors="coerce")
    runs = runs.assign(_order=order.fillna(-1), _start=runs.get("start_time", 0))
    runs = runs.sort_values(["_order", "_start"]).drop(columns=["_order", "_start"])  # rows in sweep order
    runs["base"] = runs.apply(_base_label, axis=1)
    tuned = runs.apply(tuned_prefixes, axis=1)
    runs["is_grid"] = tuned.map(bool)
    runs["lam"] = pd.to_numeric(runs.get("params.regularizer.lam"), errors="coerce")
    runs["seed"] = runs.get("params.seed", pd.Series("0", index=runs.index)).fillna("0")
    # the preset a run came from (`+sweep=NAME` in its overrides): tells an Optuna search from a grid
    runs["sweep"] = runs.get("tags.overrides", pd.Series("", index=runs.index)).fillna("").str.extract(
        r"\+sweep=(\S+)", expand=False).fillna("-")
    params = [c for c in runs.columns if c.startswith("params.") and c not in SEED_KEYS
              and not c.startswith(IGNORED_PREFIXES)] + ["sweep"]
    runs["dataset"] = runs["tags.dataset"].fillna("") if "tags.dataset" in runs else ""
    several_datasets = runs["dataset"].nunique() > 1
    rows = pd.Series("", index=runs.index)
    for (dataset, base), group in runs.groupby(["dataset", "base"], sort=False):
        varying = [c for c in params if group[c].astype(str).nunique() > 1
                   and not (group["is_grid"].all() and c.startswith(tuned[group.index[0]]))]
        for index, run in group.iterrows():
            extras = ", ".join(f"{c.rsplit('.', 1)[-1]}={run[c]}" for c in varying)
            label = base + (f" [{extras}]" if extras else "")
            rows[index] = f"{dataset}: {label}" if several_datasets else label
    runs["row"] = rows
    return runs
