"""How much fuzzing a run does: one place for the example counts and hypothesis settings.

CI runs a fixed, derandomized number of examples per fuzzer (the same inputs on every
run, so a failure reproduces and a green run means the same thing each time). Longer
local runs scale the counts with ``TB_FUZZ_EXAMPLES`` (a multiplier, default 1).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

SCALE = float(os.environ.get("TB_FUZZ_EXAMPLES", "1"))
# Shrinking replays an example hundreds of times against a live broker, whose state the
# failure may have changed: off in CI, where the unshrunk example is printed anyway.
SHRINK = os.environ.get("TB_FUZZ_SHRINK", "") not in ("", "0")


def examples(count: int) -> int:
    """``count`` scaled by ``TB_FUZZ_EXAMPLES`` (at least one)."""
    return max(1, round(count * SCALE))


def timeout(seconds: float) -> pytest.MarkDecorator:
    """A pytest-timeout mark for a fuzzing test that takes ``seconds`` at most in CI,
    scaled like its examples (the suite's 120 s per test would stop longer runs)."""
    return pytest.mark.timeout(seconds * max(1.0, SCALE))


def fuzz_settings(count: int) -> settings:
    """Settings for one fuzzer: ``count`` examples (scaled), no deadline (each example is
    a network round trip to a child process, whose timing is not what is tested), no
    example database (CI must not depend on what an earlier run found), derandomized."""
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])
    return settings(
        max_examples=examples(count),
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        print_blob=False,
        report_multiple_bugs=False,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
