"""Schemas of the λOpt paper's baselines: NeuMF (SGDA is a λOpt preset, AMF a regularizer)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from lambdaopt.config.checks import field_with, non_negative, positive, positive_list


@dataclass
class NeuMFConfig:
    _target_: str = "lambdaopt.models.neumf.NeuMF"
    dim: int = field_with(32, positive())
    mlp_dim: int = field_with(32, positive())
    layers: List[int] = field_with([64, 32, 16], positive_list())
    dropout: float = field_with(0.0, non_negative())
    init_std: float = field_with(0.01, positive())


@dataclass
class AdversarialConfig:
    _target_: str = "lambdaopt.regularizers.adversarial.Adversarial"
    lam: float = field_with(1e-2, non_negative())
    eps: float = field_with(0.05, positive())
    reg_adv: float = field_with(1.0, non_negative())


SCHEMAS = {"model": {"neumf": NeuMFConfig}, "regularizer": {"amf": AdversarialConfig}}
