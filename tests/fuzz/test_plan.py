"""The fuzz gate cannot pass or fail by chance: its plan draws the same requests every time.

Drawn here from the app's own OpenAPI document without sending them: twice in this process and
once in a fresh one with another hash seed (set and dict orders change with it), for the
operation with the richest bodies, in both modes. Another seed must draw other requests, or the
equality would prove nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.fuzz.plan import EXPLORE_EXAMPLES, GATE, FuzzPlan, exploring_plan

ROOT = Path(__file__).resolve().parents[2]
OPERATION = ("/api/v1/jobs", "POST")
EXAMPLES = 25


def drawn(document: dict, plan: FuzzPlan, mode: str) -> str:
    """A digest of the requests ``plan`` draws for OPERATION from ``document``."""
    path, method = OPERATION
    operation = schemathesis.openapi.from_dict(document)[path][method]
    seen: list[str] = []

    def record(case) -> None:
        seen.append(
            repr((case.path_parameters, case.query, case.headers, case.media_type, case.body))
        )

    plan.run(operation.as_strategy(generation_mode=GenerationMode(mode)), record)
    assert len(seen) >= EXAMPLES // 2  # the plan drew requests at all
    return hashlib.sha256("\n".join(seen).encode()).hexdigest()


# The same, in a fresh interpreter: python -c with the document's path, seed and mode.
_CHILD = """
import json, sys
from tests.fuzz.plan import FuzzPlan
from tests.fuzz.test_plan import EXAMPLES, drawn
document = json.loads(open(sys.argv[1]).read())
print(drawn(document, FuzzPlan(int(sys.argv[2]), EXAMPLES), sys.argv[3]))
"""


@pytest.fixture
def document(settings) -> dict:
    from web import create_app

    return create_app(settings).test_client().get("/api/v1/openapi.json").get_json()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_the_gate_draws_the_same_requests_every_time(document, tmp_path, mode):
    plan = FuzzPlan(GATE.seed, EXAMPLES)
    first = drawn(document, plan, mode)
    assert drawn(document, plan, mode) == first
    assert drawn(document, FuzzPlan(GATE.seed + 1, EXAMPLES), mode) != first
    saved = tmp_path / "openapi.json"
    saved.write_text(json.dumps(document))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(saved), str(GATE.seed), mode],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == first


def test_make_fuzz_variables_choose_the_exploring_plan():
    assert exploring_plan({}) is None
    assert exploring_plan({"FUZZ_SEED": " "}) is None
    assert exploring_plan({"FUZZ_SEED": "1234"}) == FuzzPlan(1234, EXPLORE_EXAMPLES)
    plan = exploring_plan({"FUZZ_SEED": "7", "FUZZ_EXAMPLES": "40"})
    assert plan == FuzzPlan(7, 40)
    assert plan.replay() == "make fuzz FUZZ_SEED=7 FUZZ_EXAMPLES=40"
    with pytest.raises(ValueError, match="FUZZ_SEED='abc'"):
        exploring_plan({"FUZZ_SEED": "abc"})
