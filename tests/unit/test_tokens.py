from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel_broker.tunnels.tokens import ConnectClaims, TokenCodec, TokenExpired, TokenInvalid

codec = TokenCodec(["old-secret-0123456789", "new-secret-0123456789"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=30)


@given(
    app=st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    tunnel=ids,
    user=ids,
    identity=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    groups=st.lists(ids, max_size=4),
)
def test_round_trip(app: str, tunnel: str, user: str, identity: dict, groups: list[str]) -> None:  # type: ignore[type-arg]
    claims = ConnectClaims(
        app, tunnel, user, float(int(time.time()) + 60), identity, {"m": 1}, tuple(groups)
    )
    token = codec.mint(claims)
    assert "=" not in token and "&" not in token and "/" not in token
    assert codec.verify(token) == claims


def test_rotation_old_key_still_verifies() -> None:
    old_only = TokenCodec(["old-secret-0123456789"])
    token = old_only.mint(ConnectClaims("a", "t", "u", time.time() + 60))
    assert codec.verify(token).tunnel_id == "t"
    newer = TokenCodec(["new-secret-0123456789"])
    with pytest.raises(TokenInvalid):
        newer.verify(token)


def test_expired_is_distinguished_from_invalid() -> None:
    token = codec.mint(ConnectClaims("a", "t", "u", time.time() - 1))
    with pytest.raises(TokenExpired):
        codec.verify(token)


@given(junk=st.text(max_size=200))
def test_garbage_never_verifies(junk: str) -> None:
    with pytest.raises(TokenInvalid):
        codec.verify(junk)


@given(position=st.integers(min_value=0, max_value=10_000), char=st.sampled_from("AZaz09-_."))
def test_any_single_character_change_is_rejected(position: int, char: str) -> None:
    token = codec.mint(ConnectClaims("app", "tun_1", "user", time.time() + 60, {"a": 1}))
    i = position % len(token)
    if token[i] == char:
        return
    tampered = token[:i] + char + token[i + 1 :]
    try:
        claims = codec.verify(tampered)
    except (TokenInvalid, TokenExpired):
        return
    # base64 may decode two spellings to the same bytes; the claims must be intact then.
    assert claims.user_id == "user" and claims.app_id == "app"


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenCodec(["short"])
