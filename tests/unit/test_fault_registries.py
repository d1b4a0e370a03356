"""Every fault kind the schema accepts has its simulator half (sim/faults.py) and its live
half (surgesim/live/fault_kinds.py), and every step kind its simulator class (sim/handler.py)."""

from typing import get_args

from surgesim.live.fault_kinds import LIVE_FAULTS
from surgesim.schema.scenario import FaultKind
from surgesim.schema.system import Step
from surgesim.sim.faults import SIM_FAULTS
from surgesim.sim.handler import STEP_KINDS


def test_each_fault_kind_has_both_halves():
    kinds = set(get_args(FaultKind))
    assert set(SIM_FAULTS) == kinds
    assert set(LIVE_FAULTS) == kinds
    for kind in kinds:
        assert SIM_FAULTS[kind].kind == LIVE_FAULTS[kind].kind == kind
        assert SIM_FAULTS[kind].instant == LIVE_FAULTS[kind].instant  # both record it the same way


def test_each_step_kind_has_its_simulator_class():
    assert set(STEP_KINDS) == set(Step.model_fields)
    for kind, cls in STEP_KINDS.items():
        assert cls.kind == kind
