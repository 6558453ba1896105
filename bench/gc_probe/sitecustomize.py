"""Count the broker's garbage collections: put this folder on PYTHONPATH for a bench run.

Why a ``sitecustomize``: the collector's cost only shows over a whole run (start, tunnels
opening, idle, shutdown), in the broker process the bench starts, so it is measured from
inside that process without changing the broker. Only a process started with ``serve`` in
its arguments is probed; load processes and the webhook receiver inherit the variable but
are left alone. At exit the broker writes ``gc-<pid>.json`` into ``GC_PROBE_OUT`` (default
/tmp): per generation the number of collections, their total and longest seconds, the
thresholds in force and the process's CPU seconds.

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
import time
from pathlib import Path
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

    def write_report() -> None:
        report = {
            "generations": stats,
            "thresholds": gc.get_threshold(),
            "process_cpu_seconds": time.process_time(),
        }
        out = Path(os.environ.get("GC_PROBE_OUT", "/tmp")) / f"gc-{os.getpid()}.json"
        out.write_text(json.dumps(report, indent=2))

    gc.callbacks.append(on_collection)
    atexit.register(write_report)


if "serve" in sys.argv:
    _install()
