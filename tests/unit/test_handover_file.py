"""The memory backend's hand-over file: undelivered events kept across a restart."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest

from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.events import EncodedEvent
from tunnel_broker.webhooks.handover import FileHandover


def event(tunnel_id: str, text: str) -> EncodedEvent:
    fragment = events.tunnel_fragment("a", tunnel_id, "user", {"name": "Zoë"}, {"k": [1]})
    return events.message(fragment, tunnel_id, text)


def handover(tmp_path: Path) -> FileHandover:
    return FileHandover(tmp_path / "state" / "handover.jsonl")


def test_save_then_take_returns_each_apps_events_in_order(tmp_path: Path) -> None:
    store = handover(tmp_path)
    fragment = events.tunnel_fragment("b", "t9", "u", {}, {})
    kept = {
        "a": [event("t1", "one"), event("t2", "two\nlines"), event("t1", "中文 ✓")],
        "b": [
            events.connected(fragment, "t9"),
            events.message(fragment, "t9", b"\x00\xff"),
            events.closed(fragment, "t9", 1000, "bye"),
        ],
    }
    assert store.save(kept) == 6
    assert store.path.exists()
    assert store.take() == kept
    assert not store.path.exists()
    assert store.take() == {}


def test_the_file_is_private_to_the_brokers_user(tmp_path: Path) -> None:
    store = handover(tmp_path)
    store.save({"a": [event("t1", "secret")]})
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert os.listdir(store.path.parent) == [store.path.name]  # no temporary left


@pytest.mark.parametrize("nothing", [{}, {"a": []}, {"a": [], "b": []}])
def test_saving_nothing_writes_nothing(
    tmp_path: Path, nothing: dict[str, list[EncodedEvent]]
) -> None:
    store = handover(tmp_path)
    assert store.save(nothing) == 0
    assert not store.path.exists()
    assert store.take() == {}


def test_a_second_save_before_any_take_comes_after_the_first(tmp_path: Path) -> None:
    store = handover(tmp_path)
    first = {"a": [event("t1", "1"), event("t2", "2")], "b": [event("t3", "3")]}
    second = {"a": [event("t1", "4")], "c": [event("t4", "5")]}
    assert store.save(first) == 3
    assert store.save(second) == 2
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert os.listdir(store.path.parent) == [store.path.name]
    assert store.take() == {
        "a": [*first["a"], *second["a"]],
        "b": first["b"],
        "c": second["c"],
    }
    assert not store.path.exists()


def test_take_without_a_file_returns_nothing(tmp_path: Path) -> None:
    assert handover(tmp_path).take() == {}
    assert FileHandover(tmp_path / "no" / "such" / "dir" / "file").take() == {}


def test_lines_that_are_not_records_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = handover(tmp_path)
    good = [event("t1", "first"), event("t1", "second"), event("t2", "third")]
    store.save({"a": good[:2]})
    with store.path.open("a", encoding="utf-8") as out:
        for line in [
            "not json",
            "",
            "42",
            "null",
            json.dumps(["a"]),
            json.dumps(["a", "t1", "extra"]),
            json.dumps(["a", "t1\nevt_1\ntunnel.bogus\n{}"]),
            json.dumps(["a", "\nevt_1\ntunnel.message\n{}"]),
            json.dumps(["a", "no record"]),
            json.dumps({"app": "a"}),
        ]:
            out.write(line + "\n")
        out.write(json.dumps(["b", events.to_record(good[2])]) + "\n")
    assert store.take() == {"a": good[:2], "b": good[2:]}
    assert not store.path.exists()
    assert "9 lines were not event records" in caplog.text  # the empty one is no record


def test_take_never_reads_through_a_link(tmp_path: Path) -> None:
    elsewhere = FileHandover(tmp_path / "elsewhere" / "events")
    saved = {"a": [event("t1", "x")]}
    elsewhere.save(saved)
    store = handover(tmp_path)
    store.path.parent.mkdir(mode=0o700)
    store.path.symlink_to(elsewhere.path)
    with pytest.raises(OSError):
        store.take()
    assert store.path.is_symlink()
    assert elsewhere.take() == saved  # neither read nor removed


def test_save_replaces_a_dangling_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    store = handover(tmp_path)
    store.path.parent.mkdir(mode=0o700)
    target = tmp_path / "target"
    store.path.symlink_to(target)
    saved = {"a": [event("t1", "x")]}
    assert store.save(saved) == 1
    assert not target.exists()
    assert not store.path.is_symlink()
    assert store.take() == saved


def test_save_never_appends_through_a_link(tmp_path: Path) -> None:
    store = handover(tmp_path)
    store.path.parent.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.write_text("someone else's file\n")
    store.path.symlink_to(target)
    with contextlib.suppress(OSError):  # refusing is as good as replacing the link
        store.save({"a": [event("t1", "secret")]})
    assert target.read_text() == "someone else's file\n"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_events_with_unicode_line_separators_survive(tmp_path: Path, separator: str) -> None:
    store = handover(tmp_path)
    saved = {"a": [event("t1", f"before{separator}after"), event("t1", "next")]}
    store.save(saved)
    assert store.take() == saved


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file away")
def test_take_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    store = handover(tmp_path)
    store.save({"a": [event("t1", "x")]})
    os.chown(store.path, 12345, 12345)
    with pytest.raises(PermissionError):
        store.take()
    assert store.path.exists()  # left for whoever owns it


def test_a_line_that_is_not_utf8_is_skipped_and_the_rest_taken(tmp_path: Path) -> None:
    store = handover(tmp_path)
    saved = {"a": [event("t1", "x")]}
    store.save(saved)
    with store.path.open("ab") as out:
        out.write(b'["a", "\xff\xfe broken"]\n')
    assert store.take() == saved
    assert not store.path.exists()


def test_a_directory_others_can_enter_is_refused(tmp_path: Path) -> None:
    store = handover(tmp_path)
    store.path.parent.mkdir(mode=0o755)
    os.chmod(store.path.parent, 0o755)
    with pytest.raises(PermissionError):
        store.save({"a": [event("t1", "x")]})
    assert not store.path.exists()
