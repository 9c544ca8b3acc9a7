"""How the OpenAPI fuzz test draws its requests: the gate's fixed seed, or an exploring seed.

The gate (`make test`) always draws with GATE_SEED, so the same code sends the same requests and
gets the same verdict. Exploring (`make fuzz`) takes its seed and example count from FUZZ_SEED and
FUZZ_EXAMPLES (make picks a random seed when none is given); a failure names the seed that
replays it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis.internal.conjecture import providers
from hypothesis.internal.conjecture.providers import Constants

SEED_VARIABLE = "FUZZ_SEED"
EXAMPLES_VARIABLE = "FUZZ_EXAMPLES"
GATE_SEED = 0
# Examples per operation and mode in the gate: a few minutes on two cores with a query worker.
GATE_EXAMPLES = 100
# Exploring runs default to more, since they are run by hand.
EXPLORE_EXAMPLES = 300


@dataclass(frozen=True)
class FuzzPlan:
    seed: int
    max_examples: int

    def replay(self) -> str:
        """The command that draws these requests again."""
        return f"make fuzz {SEED_VARIABLE}={self.seed} {EXAMPLES_VARIABLE}={self.max_examples}"

    def settings(self) -> hypothesis_settings:
        # No example database: a failure found once must not be replayed into a later run, or the
        # gate's verdict would depend on what ran before on this machine.
        return hypothesis_settings(
            max_examples=self.max_examples,
            deadline=None,
            database=None,
            derandomize=False,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
        )

    def run(self, strategy: Any, test: Callable[[Any], None]) -> None:
        """Run ``test`` on the examples this plan draws from ``strategy``."""

        @seed(self.seed)
        @self.settings()
        @given(case=strategy)
        def run(case: Any) -> None:
            test(case)

        with _without_local_constants():
            run()


@contextmanager
def _without_local_constants() -> Iterator[None]:
    # Hypothesis sometimes draws a literal found in the project's modules imported so far, and
    # which those are depends on what pytest collected and ran before (`make test` or just
    # tests/fuzz): the same seed would draw other requests. No setting turns this off, so the
    # provider's source of them is emptied while a plan runs, and its cache of them with it.
    original = providers._get_local_constants
    providers._get_local_constants = Constants
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        providers.CONSTANTS_CACHE.cache.clear()


GATE = FuzzPlan(seed=GATE_SEED, max_examples=GATE_EXAMPLES)


def exploring_plan(environ: Mapping[str, str]) -> FuzzPlan | None:
    """The plan FUZZ_SEED and FUZZ_EXAMPLES ask for, or None when no seed is given."""
    raw_seed = environ.get(SEED_VARIABLE, "").strip()
    if not raw_seed:
        return None
    raw_examples = environ.get(EXAMPLES_VARIABLE, "").strip()
    try:
        return FuzzPlan(
            seed=int(raw_seed), max_examples=int(raw_examples) if raw_examples else EXPLORE_EXAMPLES
        )
    except ValueError:
        raise ValueError(
            f"{SEED_VARIABLE}={raw_seed!r} {EXAMPLES_VARIABLE}={raw_examples!r}: both are integers"
        ) from None
