"""The broker's entry point makes CPython collect its youngest generation less often
(``server.collect_garbage_less_often``), keeping the older generations' ratios."""

from __future__ import annotations

import gc

from tunnel_broker.server import YOUNG_COLLECTION_THRESHOLD, collect_garbage_less_often


def test_only_the_young_threshold_changes() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 3)
        collect_garbage_less_often()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 7, 3)
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)
