"""Close codes: the metric label of a close never comes from the client's choice."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.tunnels.closecodes import CloseCode, metric_label


def test_the_brokers_own_codes_are_labelled_by_number() -> None:
    for code in CloseCode:
        assert metric_label(code) == str(int(code))
    assert metric_label(1006) == "1006"
    assert metric_label(1005) == "1005"


def test_client_chosen_codes_are_labelled_by_range() -> None:
    assert metric_label(3000) == metric_label(3039) == "3xxx"
    assert metric_label(4000) == metric_label(4999) == "4xxx"
    assert metric_label(1003) == "1xxx"
    assert metric_label(2000) == metric_label(65535) == "other"


@given(st.integers(min_value=0, max_value=70000))
def test_any_code_gets_one_of_a_few_labels(code: int) -> None:
    allowed = {str(int(c)) for c in CloseCode} | {"1005", "1006", "1xxx", "3xxx", "4xxx", "other"}
    assert metric_label(code) in allowed
