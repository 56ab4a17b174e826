"""Schemas of the core options: synthetic data, MF, fixed λ, torch.optim optimizers, trainer,
evaluation and tracking."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from lambdaopt.config.checks import (betas, field_with, non_empty, non_negative, one_of, open_unit,
                                     positive, positive_list, seed_range, tracking_uri)

@dataclass
class SplitConfig:
    """Per-user split. `temporal`: latest `test_ratio` of each user's interactions → test, then the
    latest `valid_ratio` of the rest → validation (the λOpt protocol, ≈60/20/20). `random`: the same
    counts, chosen at random. `leave_one_out`: latest → test, second latest → validation."""

    method: str = field_with("temporal", one_of("temporal", "random", "leave_one_out"))
    test_ratio: float = field_with(0.2, open_unit())
    valid_ratio: float = field_with(0.25, open_unit())


@dataclass
class SyntheticDataConfig:
    _target_: str = "lambdaopt.data.synthetic.load_synthetic"
    name: str = "synthetic"
    # implicit: every interaction is a positive (BPR, ranking metrics); explicit: regress the 1–5 ratings.
    feedback: str = field_with("implicit", one_of("implicit", "explicit"))
    n_users: int = field_with(1500, positive())
    n_items: int = field_with(1500, positive())
    rank: int = field_with(8, positive())
    mean_interactions: float = field_with(40.0, positive())
    min_interactions: int = field_with(5, positive())
    user_activity_exponent: float = field_with(0.8, non_negative())
    item_popularity_exponent: float = field_with(0.8, non_negative())
    signal: float = field_with(5.0, non_negative())
    min_user_interactions: int = field_with(3, non_negative())
    seed: int = field_with(0, seed_range())
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = field_with(50.0, positive())
    momentum: float = field_with(0.0, non_negative())
    dampening: float = field_with(0.0, non_negative())
    nesterov: bool = False
    weight_decay: float = field_with(0.0, non_negative())
    fused: bool = True  # torch's fused kernel: one pass per tensor instead of a chain of ops (CPU and CUDA)


@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = field_with(1e-2, positive())
    betas: List[float] = field_with([0.9, 0.999], betas())
    eps: float = field_with(1e-8, positive())
    weight_decay: float = field_with(0.0, non_negative())
    amsgrad: bool = False
    fused: bool = True  # torch's fused kernel: one pass per tensor instead of a chain of ops (CPU and CUDA)


@dataclass
class AdagradConfig:
    _target_: str = "torch.optim.Adagrad"
    _partial_: bool = True
    lr: float = field_with(0.05, positive())
    lr_decay: float = field_with(0.0, non_negative())
    initial_accumulator_value: float = field_with(0.0, non_negative())
    eps: float = field_with(1e-10, positive())
    weight_decay: float = field_with(0.0, non_negative())
    fused: bool = True  # torch's fused kernel: one pass per tensor instead of a chain of ops (CPU and CUDA)


@dataclass
class RMSpropConfig:
    _target_: str = "torch.optim.RMSprop"
    _partial_: bool = True
    lr: float = field_with(1e-3, positive())
    alpha: float = field_with(0.99, open_unit())
    eps: float = field_with(1e-8, positive())
    momentum: float = field_with(0.0, non_negative())
    centered: bool = False
    weight_decay: float = field_with(0.0, non_negative())


@dataclass
class SparseAdamConfig:
    """Lazy Adam: only the factor rows a batch touches are updated (moments included), so a step costs
    O(batch rows), not O(table) — what ML-10M-sized tables need (bench/README.md). Models gather their
    factor rows with sparse gradients under it; rows outside the batch keep their moments, unlike Adam."""

    _target_: str = "torch.optim.SparseAdam"
    _partial_: bool = True
    lr: float = field_with(1e-2, positive())
    betas: List[float] = field_with([0.9, 0.999], betas())
    eps: float = field_with(1e-8, positive())


@dataclass
class TrainerConfig:
    max_epochs: int = field_with(100, positive())
    batch_size: int = field_with(1024, positive())
    eval_every: int = field_with(1, positive())
    # Stop after `patience` evaluations without improvement of `monitor` on validation; 0 = never stop early.
    patience: int = field_with(10, non_negative())
    # auto: ndcg@10 for implicit feedback, rmse for explicit ratings, train_mse for completion.
    monitor: str = "auto"
    # Whether a larger monitored value is better; auto: min for errors (rmse, mae, *_mse, ...), else max.
    mode: str = field_with("auto", one_of("auto", "max", "min"))
    min_delta: float = field_with(0.0, non_negative())
    # Select and stop on the mean of the monitored metric over the last `smoothing` evaluations (1 = the
    # raw value): an early one-epoch spike (a popularity-like model before personalization) can then no
    # longer be selected, nor end training before the real optimum (trainer.py, _evaluate_epoch).
    smoothing: int = field_with(3, positive())
    # Epochs of warm-up: none before this is selected and training does not stop early before it.
    min_epochs: int = field_with(10, non_negative())
    # Stop once the last step's training loss is ≤ stop_loss (0 = never); the deep-MF papers stop at 1e-6.
    stop_loss: float = field_with(1e-6, non_negative())
    # Gradient steps per epoch for full-batch objectives (completion; explicit ratings with full_batch).
    steps_per_epoch: int = field_with(1, positive())
    # Explicit ratings: every training rating in every step instead of minibatches of batch_size.
    full_batch: bool = False
    # Write checkpoint.pt (model, optimizers, λ, RNGs, progress) after every evaluated epoch, for resume=.
    checkpoint: bool = True
    # Keep the checkpoint once the run FINISHED (model.pt already holds the selected weights).
    keep_checkpoint: bool = False
    # Also check every gradient for NaN/Inf after each backward pass (the loss is always checked); the
    # steps then all run through autograd.
    check_finite_grads: bool = False
    # MF-BPR under fixed λ / L1 / no penalty: steps with the gradient in closed form instead of autograd
    # (tasks/bpr_step.py; the same results to float rounding, several times faster). false: autograd always.
    closed_form_step: bool = True
    # MF-BPR with plain SGD (fixed λ, learned λ or none; CPU): apply each triple's update before the next
    # triple is read — per-sample SGD, as cornac and implicit train — instead of one update per batch.
    # Triple t moves its rows by −(lr/batch_size)·∇ℓ_t, so lr means the same in both (bpr_kernel.py).
    per_sample: bool = False
    # Steps between returning the C heap's free pages to the OS (glibc malloc_trim; lambdaopt/memory.py);
    # without it freed per-step buffers of varying sizes stay resident as heap holes. 0 = never.
    release_memory_every: int = field_with(64, non_negative())


@dataclass
class EvaluationConfig:
    ks: List[int] = field_with([10, 50, 100], positive_list())
    # Users scored at once in full ranking: memory is chunk_users × n_items floats.
    chunk_users: int = field_with(1024, positive())
    # Singular values logged per evaluation (sigma_1..k) and kept as a trajectory artifact (completion).
    spectrum_top_k: int = field_with(10, positive())
    # Explicit ratings: also log the spectrum of the model's full matrix (deep-MF dynamics on real data).
    track_spectrum: bool = False


@dataclass
class TrackingConfig:
    enabled: bool = True
    # Default: a SQLite file in the launch directory. Point at `http://host:port` for a shared server.
    uri: str = field_with("sqlite:///mlflow.db", tracking_uri())
    experiment: str = field_with("lambdaopt", non_empty())
    # Where a newly created experiment keeps its artifacts (relative paths are made absolute).
    artifact_location: str = field_with("mlartifacts", non_empty())
    run_name: Optional[str] = None
    # The selected weights as model.pt (for init_from=) and as an MLflow pyfunc model (lambdaopt/mlflow_model.py).
    log_model: bool = True
    # CPU/memory/GPU use under system/* in MLflow, sampled every 10 s (psutil; off: a thread per run).
    system_metrics: bool = False


SCHEMAS = {
    "dataset": {"synthetic": SyntheticDataConfig},
    "optimizer": {"sgd": SGDConfig, "adam": AdamConfig, "adagrad": AdagradConfig, "rmsprop": RMSpropConfig,
                  "sparse_adam": SparseAdamConfig},
    "trainer": {"default": TrainerConfig},
    "evaluation": {"default": EvaluationConfig},
    "tracking": {"mlflow": TrackingConfig},
}
