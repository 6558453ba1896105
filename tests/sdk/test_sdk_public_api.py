"""The public surface is what ``business_sdk/__init__.py`` exports, and nothing leaks."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import business_sdk
from business_sdk import _exceptions

SDK_DIR = Path(business_sdk.__file__).parent


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(business_sdk) if not name.startswith("_")}
    # Submodules (private ones, and the integrations package) are attributes, not API.
    public -= {n for n, v in vars(business_sdk).items() if inspect.ismodule(v)}
    assert set(business_sdk.__all__) - {"__version__"} == public
    assert sorted(business_sdk.__all__) == business_sdk.__all__


def test_every_exported_name_resolves() -> None:
    for name in business_sdk.__all__:
        assert getattr(business_sdk, name) is not None


def test_exported_classes_do_not_say_they_live_in_private_modules_only() -> None:
    for name in business_sdk.__all__:
        obj = getattr(business_sdk, name)
        if inspect.isclass(obj):
            assert obj.__module__.startswith("business_sdk."), name


def test_the_package_is_marked_as_typed() -> None:
    assert (SDK_DIR / "py.typed").is_file()


def test_the_exception_tree_in_the_docstring_names_every_exception() -> None:
    doc = _exceptions.__doc__ or ""
    exceptions = [
        obj
        for obj in vars(_exceptions).values()
        if inspect.isclass(obj) and issubclass(obj, business_sdk.TunnelBrokerError)
    ]
    assert len(exceptions) >= 20
    for cls in exceptions:
        assert cls.__name__ in doc, cls.__name__
        assert cls.__name__ in business_sdk.__all__, cls.__name__


def test_the_exception_tree_drawn_matches_the_classes() -> None:
    """Each drawn row's parent (by indentation) is the class's base."""
    doc = _exceptions.__doc__ or ""
    rows = doc.split("Exception tree::", 1)[1].splitlines()
    stack: list[tuple[int, str]] = []
    checked = 0
    for row in rows:
        text = row.lstrip(" │├└─")
        name = text.split()[0] if text else ""
        if not hasattr(_exceptions, name):
            continue
        depth = len(row) - len(text)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parent = getattr(_exceptions, stack[-1][1])
            assert parent in getattr(_exceptions, name).__mro__[1:], (name, stack[-1][1])
            checked += 1
        stack.append((depth, name))
    drawn_root_excluded = sum(
        1
        for obj in vars(_exceptions).values()
        if inspect.isclass(obj) and issubclass(obj, business_sdk.TunnelBrokerError)
    )
    assert checked == drawn_root_excluded - 1


def test_the_docs_cover_every_public_name_and_client_call() -> None:
    text = (SDK_DIR.parent / "docs" / "business-sdk.md").read_text()
    for name in business_sdk.__all__:
        if name in {"__version__", "Data", "parse_events"}:
            continue
        assert re.search(rf"\b{name}\b", text), name
    for name, member in vars(business_sdk.TunnelBroker).items():
        if not name.startswith("_") and inspect.isfunction(member) and name != "aclose":
            assert f"`{name}(" in text, name


def test_both_clients_offer_the_same_calls() -> None:
    def calls(cls: type) -> set[str]:
        return {n for n, m in vars(cls).items() if inspect.isfunction(m) and not n.startswith("_")}

    assert calls(business_sdk.TunnelBroker) - {"aclose"} == calls(business_sdk.SyncTunnelBroker) - {
        "close"
    }
