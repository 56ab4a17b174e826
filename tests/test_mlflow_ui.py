"""A run as a person sees it in the MLflow UI: `mlflow ui` over a tiny run's store, its page (the link a run
prints) rendered by headless Chromium, and the run's name, description and selected-epoch values in the DOM."""
import re

import pytest

from conftest import TINY, compose_config, empty_store_in, start_service
from lambdaopt.console import number
from lambdaopt.experiment import run
from lambdaopt.mlflow_ui import chromium, dump_dom, served
from lambdaopt.tracking import experiment_url

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="session")
def browser():
    """Chromium, installed by scripts/install-chromium.sh when absent (as the test command installs
    everything else); a failure to install fails the test with the script's message."""
    if chromium() is None:
        start_service("install-chromium.sh")
    found = chromium()
    assert found is not None, "scripts/install-chromium.sh ran but no chromium is on PATH"
    return found


def visible_text(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_run_page_shows_the_name_and_the_selected_epochs_values(tmp_path, browser):
    uri = f"sqlite:///{empty_store_in(tmp_path)}"
    cfg = compose_config([*TINY, f"tracking.uri={uri}", f"tracking.artifact_location={tmp_path}/artifacts"])
    result = run(cfg)
    with served(uri) as base:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(uri).get_experiment_by_name("lambdaopt").experiment_id
        text = visible_text(dump_dom(browser, experiment_url(base, experiment, result.run_id)))
    assert "fixed λ=0.005 · MF · synthetic · seed 0" in text, text[:2000]  # rendered, not the loading shell
    # the description's table (4 significant digits) and MLflow's metric table (full precision)
    selected, test = result.valid["ndcg@10"], result.test["ndcg@10"]
    assert f"validation, epoch {result.best_epoch}" in text and number(selected) in text and number(test) in text
    assert f"test/ndcg_at_10 {test!r}" in text and f"best_valid/ndcg_at_10 {selected!r}" in text
