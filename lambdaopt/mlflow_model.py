"""The selected model as an MLflow model (the run's "Logged models", the experiment's Models tab):

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    model.predict(pd.DataFrame({"user_id": [0, 7]}), params={"k": 10})
    →  user_id  rank  item_id  score      (k rows per user, best first)

A pyfunc rather than `mlflow.pytorch`: a user wants items for users, not a tensor of scores, and the
items a user already interacted with in training or validation are left out, as the test evaluation
leaves them out. The model is rebuilt from its config node (`_target_`) and the selected state dict;
the lambdaopt package travels with it (`code_paths`), so it loads where lambdaopt is not installed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import yaml

from lambdaopt.evaluation.ranking import gather_rows

NAME = "model"  # the model's folder in the run's artifacts: runs:/<run id>/model
DEFAULT_K = 10


class TopKRecommender(mlflow.pyfunc.PythonModel):
    """predict: a DataFrame with a `user_id` column → the `k` (param) best items of each user."""

    def load_context(self, context) -> None:
        from hydra.utils import instantiate

        spec = yaml.safe_load(Path(context.artifacts["config"]).read_text())
        self.n_users, self.n_items = spec["n_users"], spec["n_items"]
        self.model = instantiate(spec["model"], n_users=self.n_users, n_items=self.n_items)
        self.model.load_state_dict(torch.load(context.artifacts["state_dict"], map_location="cpu", weights_only=True))
        self.model.eval()
        known = np.load(context.artifacts["known_items"])
        self.known_indptr, self.known_items = torch.as_tensor(known["indptr"]), torch.as_tensor(known["items"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = min(int((params or {}).get("k", DEFAULT_K)), self.n_items)
        users = np.array(model_input["user_id"], dtype=np.int64)  # a copy: torch wants a writable array
        outside = users[(users < 0) | (users >= self.n_users)]
        if len(outside):
            raise ValueError(f"user_id {outside[0]} is not a user of this model: use ids in [0, {self.n_users - 1}]")
        with torch.no_grad():
            scores = self.model.score_all(torch.as_tensor(users)).float()
        # seen items never come back as recommendations: every (row, item) of the users' CSR rows at once
        rows, _, seen = gather_rows(self.known_indptr, self.known_items, torch.as_tensor(users))
        scores[rows, seen] = -torch.inf
        top = torch.topk(scores, k, dim=1)
        return pd.DataFrame({"user_id": np.repeat(users, k), "rank": np.tile(np.arange(1, k + 1), len(users)),
                             "item_id": top.indices.numpy().ravel().astype(np.int64),
                             "score": top.values.numpy().ravel().astype(np.float64)})


def known_items(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) per user of the training and validation interactions; none for completion data."""
    if hasattr(dataset, "train"):
        return dataset.train.concat(dataset.valid).csr(dataset.n_users)
    return np.zeros(dataset.n_users + 1, np.int64), np.zeros(0, np.int64)


def requirements() -> list[str]:
    """What the model needs besides the lambdaopt code it carries (pinned as installed here; listing
    them avoids MLflow's inference, which loads the model in a subprocess for seconds)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "torch", "hydra-core", "omegaconf", "numpy", "pandas",
                                                     "pyyaml", "scipy")]


def log_model(tracker, model: torch.nn.Module, model_node: dict, dataset) -> None:
    """Log `model` (selected weights, CPU) under `runs:/<run id>/model` with a signature and an input
    example; `model_node`: the resolved config's `model` (its `_target_` rebuilds it)."""
    if tracker.run_id is None:
        return
    from mlflow.models import infer_signature

    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        code = os.path.join(tmp, "code", package.name)
        shutil.copytree(package, code, ignore=shutil.ignore_patterns("__pycache__"))
        artifacts = {"state_dict": os.path.join(tmp, "state_dict.pt"), "config": os.path.join(tmp, "model.yaml"),
                     "known_items": os.path.join(tmp, "known_items.npz")}
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, artifacts["state_dict"])
        Path(artifacts["config"]).write_text(yaml.safe_dump(
            {"model": model_node, "n_users": dataset.n_users, "n_items": dataset.n_items}, sort_keys=False))
        indptr, items = known_items(dataset)
        np.savez_compressed(artifacts["known_items"], indptr=indptr, items=items)
        example = pd.DataFrame({"user_id": np.arange(min(2, dataset.n_users), dtype=np.int64)})
        loaded = TopKRecommender()  # for the example's output only
        loaded.load_context(type("Context", (), {"artifacts": artifacts})())
        with warnings.catch_warnings():  # the hint that integer columns cannot hold NaN: user ids never are NaN
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            signature = infer_signature(example, loaded.predict(None, example), params={"k": DEFAULT_K})
        # models from code (pyfunc_entry.py builds the model at load time), so no Python object is pickled
        mlflow.pyfunc.log_model(name=NAME, python_model=str(package / "pyfunc_entry.py"), artifacts=artifacts,
                                signature=signature, input_example=example, code_paths=[code],
                                pip_requirements=requirements())
