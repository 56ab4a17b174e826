"""The run's data as an MLflow dataset input (`mlflow.log_input`): what MLflow's Dataset column, its
filter and the run page's "Datasets used" panel show.

    name     dataset.name (ml-100k, synthetic, lowrank)
    digest   the split's fingerprint (the `dataset_hash` tag): runs on different data never share it
    source   the published file's URL, the user's own file (dataset.path), or the generator that made it
    schema   the columns of an interaction (user_id, item_id, timestamp[, rating]) or of an observation
    profile  the split sizes and statistics (n_train/n_valid/n_test, density, item Gini, ...)

Nothing of the data itself is stored: the split is rebuilt from the config and checked by the digest.
"""
from __future__ import annotations

import json

from mlflow.data.sources import LocalArtifactDatasetSource  # registered by mlflow.data at import
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import ColSpec, DataType, Schema
from omegaconf import DictConfig

# The input's context tag: one dataset object holds all three parts of the split.
CONTEXT = "train/valid/test"


class SplitMetaDataset(MetaDataset):
    """A MetaDataset with a profile (MetaDataset itself has none): the statistics of the split."""

    def __init__(self, source: DatasetSource, name: str, digest: str, schema: Schema, profile: dict):
        self._profile = profile
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def dataset_source(node: DictConfig) -> DatasetSource:
    """Where the data came from: dataset.path, else the first published URL of a real dataset, else the
    generator (`_target_`) and its seed."""
    from lambdaopt.data.fetch import SPECS

    if node.get("path"):
        return LocalArtifactDatasetSource(str(node.path))
    spec = SPECS.get(str(node.get("name")))
    if spec is not None and spec.sources:
        return HTTPDatasetSource(spec.sources[0].url)
    return CodeDatasetSource({"mlflow.source.name": str(node.get("_target_")), "seed": str(node.get("seed"))})


def dataset_schema(dataset, feedback: str) -> Schema:
    """The columns one record of `dataset` has: an interaction of a split, or an observed entry."""
    if hasattr(dataset, "train"):
        columns = [ColSpec(DataType.long, "user_id"), ColSpec(DataType.long, "item_id"),
                   ColSpec(DataType.long, "timestamp")]
        if feedback == "explicit":  # implicit feedback stores rating 1 for every interaction: no column
            columns.append(ColSpec(DataType.float, "rating"))
        return Schema(columns)
    return Schema([ColSpec(DataType.long, "row"), ColSpec(DataType.long, "col"), ColSpec(DataType.float, "value")])


def log_dataset(tracker, dataset, node: DictConfig) -> None:
    """Log `dataset` (built from config node `node`) as the run's input; nothing when not tracking."""
    if tracker.run_id is None:
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    profile = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataset.statistics().items()}
    schema = dataset_schema(dataset, str(node.get("feedback", "implicit")))
    logged = SplitMetaDataset(dataset_source(node), dataset.name, dataset.fingerprint, schema, profile)
    for attempt in (1, 2):
        try:
            mlflow.log_input(logged, context=CONTEXT)
            return
        except MlflowException as error:
            # Parallel jobs logging the same data to a server on PostgreSQL race to insert its dataset row
            # (MLflow looks it up, then inserts): the loser's second call finds the row and only links it.
            text = str(error).lower()
            if attempt == 2 or not ("unique" in text or "duplicate" in text):
                raise
