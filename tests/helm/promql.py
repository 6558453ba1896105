"""What the chart's queries (alert rules, dashboard panels) may name: the series the broker
really exports, read from a real node's registry, and the metric names a PromQL
expression uses."""

from __future__ import annotations

import asyncio
import re
from functools import cache

from tunnel_broker.config import Secret, Settings
from tunnel_broker.node import Node

# PromQL words that are not metric names: binary operators, modifiers and the keywords
# that take a label list (whose labels are removed with their list).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
NAME = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


async def _families() -> dict[str, str]:
    """Metric family name -> type, of a node on each backend: the memory backend, and
    the Redis one (which adds the tb_redis_* metrics; building it connects nowhere).
    Collected inside an event loop, as ``/metrics`` is (tb_asyncio_tasks needs one)."""
    families: dict[str, str] = {}
    for backend in ("memory", "redis"):
        settings = Settings(backend=backend, secret_key=Secret("helm-test-secret-key-0123"))
        for family in Node(settings, []).metrics.registry.collect():
            families[family.name] = family.type
    return families


@cache
def exported_families() -> dict[str, str]:
    return asyncio.run(_families())


@cache
def exported_series() -> frozenset[str]:
    """Every series name in the broker's exposition: a counter's is its name plus
    ``_total``, a histogram's plus ``_bucket``, ``_sum`` and ``_count``, a gauge's its name."""
    names = set()
    for name, kind in exported_families().items():
        if kind == "counter":
            names.add(name + "_total")
        elif kind == "histogram":
            names |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(name)
    return frozenset(names)


def family_of(series: str) -> str:
    """The family a series name belongs to (``tb_connects_total`` -> ``tb_connects``)."""
    families = exported_families()
    for suffix in ("_total", "_bucket", "_sum", "_count", ""):
        base = series.removesuffix(suffix) if suffix else series
        if base in families:
            return base
    raise KeyError(series)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values(...)`` query)
    selects: what is left once strings, label matchers, ranges, grouping label lists,
    function names, keywords and numbers are taken out."""
    expr = expr.strip()
    variable_query = re.fullmatch(r"label_values\((.*),\s*\w+\s*\)", expr, re.S)
    if variable_query:
        expr = variable_query.group(1)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", "", expr)
    expr = re.sub(r"\[[^\[\]]*\]", "", expr)
    expr = re.sub(GROUPING, "", expr)
    names = set()
    for match in NAME.finditer(expr):
        name, call = match.groups()
        if call or name in KEYWORDS:
            continue  # a function, or an operator
        names.add(name)
    return names


def matchers(expr: str) -> list[str]:
    """The label matcher sets (``{...}``) of an expression, in order."""
    return re.findall(r"\{([^{}]*)\}", expr)
