"""The public surface of ``tunnel_broker.wechat`` and its documented exception tree."""

from __future__ import annotations

import re
from types import ModuleType

import tunnel_broker.wechat as wechat
from tunnel_broker.wechat import errors


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(wechat).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert sorted(wechat.__all__) == sorted(public)


def every_error_class() -> list[type[errors.WeChatError]]:
    found: list[type[errors.WeChatError]] = []
    pending: list[type[errors.WeChatError]] = [errors.WeChatError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


def test_the_docstring_tree_matches_the_class_tree() -> None:
    """Each tree line's indentation says who its parent is; check it against the classes."""
    parents: list[str] = []
    drawn: dict[str, str | None] = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^ {4}([│ ]*)(?:[├└]── )?([A-Z]\w+)\s", line)
        if not match:
            continue
        depth = len(match[1]) // 4 + (1 if "──" in line else 0)
        del parents[depth:]
        drawn[match[2]] = parents[-1] if parents else None
        parents.append(match[2])
    classes = every_error_class()
    assert set(drawn) == {cls.__name__ for cls in classes}
    for cls in classes:
        parent = cls.__base__
        expected = None if parent is Exception or parent is None else parent.__name__
        assert drawn[cls.__name__] == expected, cls


def test_every_error_is_exported() -> None:
    for cls in every_error_class():
        assert cls.__name__ in wechat.__all__


def test_errcode_table_points_into_the_tree() -> None:
    for errcode, cls in errors.ERRCODE_ERRORS.items():
        assert issubclass(cls, errors.WeChatApiError)
        assert str(errcode) in (errors.__doc__ or "")
