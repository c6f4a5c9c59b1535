"""Isolation attacks replayed on the simulated host (issue 5, item 2).

``device`` holds the DMA-engine test device a malicious driver programs; ``catalog`` the
attacks, each a function of a configuration knob and a seed returning an
:class:`AttackOutcome` with the machine's evidence.
"""

from passthru.scenarios.attacks.catalog import (
    CATALOG,
    Attack,
    AttackOutcome,
    attack,
    run_catalog,
)
from passthru.scenarios.attacks.device import DmaEngine, DmaEngineState

__all__ = ["CATALOG", "Attack", "AttackOutcome", "DmaEngine", "DmaEngineState", "attack",
           "run_catalog"]
