"""`hydra/sweeper=union`: the union of several grids in one multirun.

Hydra's basic sweeper runs one cartesian product. A paper table compares arms whose keys differ (the
fixed λ grid sweeps `regularizer.lam`, which λOpt configs do not have), so it needs a *union* of grids:

    hydra:
      sweeper:
        params: {seed: 0,1,2}                  # shared by every grid (as in the basic sweeper)
        grids:
          - {regularizer: fixed, regularizer.lam: "0,1e-2"}
          - {regularizer: "lambdaopt_d,lambdaopt_dui"}

runs (2 + 2) × 3 jobs. A command-line override of a key that some grids sweep replaces it in those grids
only (`regularizer.lam=1e-3,1e-2` shrinks the fixed grid, the λOpt grid stays); any other override applies
to every grid.
It lives in `hydra_plugins/` because Hydra only instantiates sweepers from that package.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser

log = logging.getLogger(__name__)


@dataclass
class UnionSweeperConf:
    _target_: str = "hydra_plugins.lambdaopt_sweeper.union_sweeper.UnionSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    grids: List[Dict[str, Any]] = field(default_factory=list)  # values: "a,b" lists or plain scalars


ConfigStore.instance().store(group="hydra/sweeper", name="union", node=UnionSweeperConf, provider="lambdaopt")


class UnionSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None,
                 grids: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = [dict(grid) for grid in (grids or [{}])] or [{}]

    def sweep(self, arguments: List[str]) -> Any:
        """Expand each grid like the basic sweeper (shared params, then the grid's, then the command
        line), concatenate the job lists, and let the basic sweeper launch them in batches."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs: List[List[str]] = []
        parsed = parser.parse_overrides(list(arguments))
        in_grids = {key for grid in self.grids for key in grid}
        for grid in self.grids:
            mine = [text for text, override in zip(arguments, parsed)
                    if override.get_key_element() not in in_grids or override.get_key_element() in grid]
            strings = [f"{k}={v}" for k, v in {**self.params, **grid}.items()] + mine
            [grid_jobs] = self.split_arguments(parser.parse_overrides(strings), None)
            jobs.extend(grid_jobs)
        log.info("union of %d grids: %d jobs", len(self.grids), len(jobs))
        # BasicSweeper.sweep re-parses its params: hand it the expanded jobs instead.
        self.params, batch_size = {}, self.max_batch_size
        self.split_arguments = lambda overrides, max_batch_size: list(  # type: ignore[method-assign]
            BasicSweeper.split_overrides_to_chunks(jobs, batch_size))
        return super().sweep([])
