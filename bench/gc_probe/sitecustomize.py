"""Count the broker's garbage collections: put this folder on PYTHONPATH for a bench run.

Why a ``sitecustomize``: the collector's cost only shows over a whole run (start, tunnels
opening, idle, shutdown), in the broker process the bench starts, so it is measured from
inside that process without changing the broker. Only a process started with ``serve`` in
its arguments is probed; load processes and the webhook receiver inherit the variable but
are left alone. At exit the broker writes ``gc-<pid>.json`` into ``GC_PROBE_OUT`` (default
/tmp): per generation the number of collections, their total and longest seconds, the
thresholds in force and the process's CPU seconds.

``GC_PROBE_CENSUS=1`` also counts the objects the collector tracks, by type, every few
seconds from a thread, and reports the census with the most of them (the broker at its
fullest: that is what a full collection walks), its coroutines by function too. It takes
the lock the broker runs under for a tenth of a second or so each time, so its CPU
figures are not the bench's.

``GC_PROBE_DEFAULT_THRESHOLDS=1`` keeps CPython's default thresholds (the broker's own
``collect_garbage_less_often`` is made a no-op) to compare against them::

    PYTHONPATH=bench/gc_probe GC_PROBE_DEFAULT_THRESHOLDS=1 \
        .venv/bin/python bench/broker_bench.py --memory --tunnels 10000 --client-processes 4
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import CoroutineType
from typing import Any


def _install() -> None:
    if os.environ.get("GC_PROBE_DEFAULT_THRESHOLDS") == "1":
        gc.set_threshold = lambda *args: None
    stats = {gen: {"collections": 0, "seconds": 0.0, "longest": 0.0} for gen in range(3)}
    started = [0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        generation = stats[info["generation"]]
        generation["collections"] += 1
        generation["seconds"] += took
        generation["longest"] = max(generation["longest"], took)

    fullest: dict[str, Any] = {"tracked": 0, "by_type": {}, "coroutines": {}}

    def take_census() -> None:
        while True:
            time.sleep(3.0)
            tracked = gc.get_objects()
            if len(tracked) > fullest["tracked"]:
                by_type = Counter(type(obj).__qualname__ for obj in tracked)
                fullest["tracked"] = len(tracked)
                fullest["by_type"] = dict(by_type.most_common(60))
                coroutines = Counter(
                    obj.cr_code.co_qualname for obj in tracked if isinstance(obj, CoroutineType)
                )
                fullest["coroutines"] = dict(coroutines.most_common(20))
            del tracked

    def write_report() -> None:
        report = {
            "generations": stats,
            "fullest": fullest,
            "thresholds": gc.get_threshold(),
            "process_cpu_seconds": time.process_time(),
        }
        out = Path(os.environ.get("GC_PROBE_OUT", "/tmp")) / f"gc-{os.getpid()}.json"
        out.write_text(json.dumps(report, indent=2))

    gc.callbacks.append(on_collection)
    if os.environ.get("GC_PROBE_CENSUS") == "1":
        threading.Thread(target=take_census, name="gc-census", daemon=True).start()
    atexit.register(write_report)


if "serve" in sys.argv:
    _install()
