"""Targets and payloads have exactly the wire shapes of the contract."""

from __future__ import annotations

import pytest

from business_sdk import Target
from business_sdk._payload import close_fields, encode_data


def test_targets_render_the_four_contract_shapes() -> None:
    assert Target.tunnels("t1").to_json() == {"tunnels": ["t1"]}
    assert Target.users("u1", "u2").to_json() == {"users": ["u1", "u2"]}
    assert Target.groups(["g1", "g2"], "g3").to_json() == {"groups": ["g1", "g2", "g3"]}
    assert Target.all().to_json() == {"all": True}


def test_a_string_is_one_id_not_a_sequence_of_letters() -> None:
    assert Target.users("abc").ids == ("abc",)
    assert Target.tunnels(iter(["t1", "t2"])).ids == ("t1", "t2")


@pytest.mark.parametrize("ids", [(), ([],), ("",), (["ok", ""],), ([1],)])
def test_empty_or_non_string_ids_are_refused(ids: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        Target.tunnels(*ids)  # type: ignore[arg-type]


def test_targets_are_values() -> None:
    assert Target.users("u") == Target.users(["u"])
    assert hash(Target.all()) == hash(Target.all())


def test_text_is_data_and_bytes_like_is_base64() -> None:
    assert encode_data("héllo") == {"data": "héllo"}
    assert encode_data(b"\x00\x01") == {"data_base64": "AAE="}
    assert encode_data(bytearray(b"\xff")) == {"data_base64": "/w=="}
    assert encode_data(memoryview(b"ab")) == {"data_base64": "YWI="}
    assert encode_data("") == {"data": ""}


def test_close_fields_are_optional_and_checked() -> None:
    assert close_fields(None, None) == {}
    assert close_fields(1000, "") == {"code": 1000, "reason": ""}
    assert close_fields(4999, None) == {"code": 4999}
    with pytest.raises(ValueError, match="4000-4999"):
        close_fields(1011, None)
