"""The λOpt paper's baselines: SGDA's λ-gradient, NeuMF's shapes and training."""
import numpy as np
import pytest
import torch

from lambdaopt.models.neumf import NeuMF
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.regularizers.lambdaopt import LambdaOpt

from conftest import compose_config
from lookahead_setup import check_against_fd, make_setup


def test_sgda_lambda_gradient_matches_finite_differences_of_an_sgd_step(dataset):
    """SGDA looks ahead through plain SGD at the model's lr, whatever the model trains with (Adam here)."""
    model, objective, adam, _, train, valid = make_setup(dataset, "adam", "double_d")
    sgda = LambdaOpt(granularity="double_d", lookahead="sgd", lambda_optimizer="sgd", lambda_lr=1.0, grad_clip=None)
    sgda.setup(model, objective)
    sgda.lam.double()
    with torch.no_grad():
        for p in sgda.lam.raw.values():
            p.uniform_(0.05, 0.5)
    objective.valid_batch = lambda rng, size: valid
    before = {k: p.detach().clone() for k, p in sgda.lam.raw.items()}
    sgda.update(model, adam, train, 0)
    grads = {k: p.grad.clone() for k, p in sgda.lam.raw.items()}
    assert {k: tuple(g.shape) for k, g in grads.items()} == {"user": (4,), "item": (4,)}
    for k, p in sgda.lam.raw.items():  # an SGD step on λ, then projection
        torch.testing.assert_close(p.detach(), (before[k] - grads[k]).clamp(min=0))
    with torch.no_grad():
        for k, p in sgda.lam.raw.items():
            p.copy_(before[k])
            p.grad = grads[k]
    plain_sgd = torch.optim.SGD(model.parameters(), lr=adam.param_groups[0]["lr"])
    check_against_fd(model, objective, plain_sgd, sgda, train, valid, steps=1)


def test_neumf_shapes_and_consistent_scores():
    torch.manual_seed(0)
    model = NeuMF(7, 11, dim=4, mlp_dim=3, layers=[8, 4], max_pairs=10)  # forces several item chunks
    users = torch.tensor([0, 3, 6])
    full = model.score_all(users)
    assert full.shape == (3, 11)
    pairs = model.score(users.repeat_interleave(11), torch.arange(11).repeat(3)).view(3, 11)
    torch.testing.assert_close(full, pairs)


@pytest.mark.slow
def test_neumf_training_lowers_the_bpr_loss(dataset):
    torch.manual_seed(0)
    model = NeuMF(dataset.n_users, dataset.n_items, dim=8, mlp_dim=8, layers=[16, 8], init_std=0.1)
    objective = BPRObjective(dataset, 64, torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)

    def epoch_loss(train: bool):
        total = 0.0
        for batch in objective.batches(rng):
            loss = objective.loss(model, batch)
            if train:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total += float(loss.detach()) * len(batch[0])
        return total / len(dataset.train)

    with torch.no_grad():
        before = epoch_loss(train=False)
    for _ in range(15):
        epoch_loss(train=True)
    with torch.no_grad():
        after = epoch_loss(train=False)
    assert after < 0.8 * before


def test_baseline_configs_compose():
    assert compose_config(["regularizer=sgda"]).regularizer.lookahead == "sgd"
    assert compose_config(["model=neumf"]).model.layers == [64, 32, 16]


def test_amf_perturbation_respects_eps_and_increases_the_loss(dataset):
    from lambdaopt.regularizers.adversarial import Adversarial

    model, objective, _, _, train, _ = make_setup(dataset, "adam", "d")
    amf = Adversarial(lam=0.0, eps=0.1, reg_adv=1.0)
    amf.setup(model, objective)
    delta = amf.perturbation(model, train)
    touched = {"user_embedding": train[0], "item_embedding": torch.cat(train[1:])}
    for name, d in delta.items():
        norms = d.norm(dim=-1)
        assert (norms <= 0.1 + 1e-12).all()
        assert torch.allclose(norms[touched[name]], torch.full_like(norms[touched[name]], 0.1))
        untouched = torch.ones(len(d), dtype=torch.bool)
        untouched[touched[name]] = False
        assert (norms[untouched] == 0).all()
    clean = float(objective.loss(model, train).detach())
    adversarial = float(amf._bpr(model, train, {n: getattr(model, n).detach() + d for n, d in delta.items()}).detach())
    random = {n: 0.1 * torch.nn.functional.normalize(torch.randn_like(d), dim=-1) for n, d in delta.items()}
    randomly_perturbed = float(amf._bpr(model, train, {n: getattr(model, n).detach() + d for n, d in random.items()}))
    assert adversarial > clean and adversarial > randomly_perturbed
    penalty = amf.penalty(model, objective.loss_and_rows(model, train)[1], len(train[0]), train).detach()
    assert float(penalty) == pytest.approx(adversarial, rel=1e-9)


@pytest.mark.slow
def test_amf_warm_starts_from_a_trained_mf_run(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from conftest import TINY, run_in
    from lambdaopt.errors import LambdaoptError

    mf_run = run_in(tmp_path, TINY).run_id
    with caplog.at_level("INFO", logger="lambdaopt"):
        amf_run = run_in(tmp_path, [*TINY, "regularizer=amf", f"init_from={mf_run}"]).run_id
    assert f"initialized the model from run {mf_run}" in caplog.text
    amf = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_run(amf_run)
    assert amf.info.status == "FINISHED" and amf.data.params["init_from"] == mf_run
    with pytest.raises(LambdaoptError, match="init_from=0123456789abcdef") as error:
        run_in(tmp_path, [*TINY, "regularizer=amf", "init_from=0123456789abcdef"])
    assert "\n" not in str(error.value)  # the one line the command prints
