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


def _zlib_bomb_token(app_id: str | None) -> str:
    """A forged token whose payload claims to be compressed: 7 KB that would inflate to
    megabytes (the audit's 5.8 MB app id)."""
    import base64
    import zlib

    bomb = zlib.compress(b'{"a":"' + b"A" * 5_000_000 + b'"}', 9)
    payload = "." + base64.urlsafe_b64encode(bomb).decode().rstrip("=")
    signed = payload + ".c2lnbmF0dXJl"
    return signed if app_id is None else f"{app_id}~{signed}"


@pytest.mark.parametrize("app_id", [None, "demo"], ids=["old format", "new format"])
def test_forged_compressed_tokens_are_refused_without_inflating(app_id: str | None) -> None:
    import tracemalloc

    token = _zlib_bomb_token(app_id)
    assert len(token) < 7168
    tracemalloc.start()
    try:
        for _ in range(20):
            with pytest.raises(TokenInvalid):
                codec.verify(token)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"verifying forged tokens allocated {peak} bytes"


def test_tokens_are_refused_before_any_work_when_too_long_or_of_an_impossible_app() -> None:
    genuine = codec.mint(ConnectClaims("demo", "t", "u", time.time() + 60))
    with pytest.raises(TokenInvalid, match="too long"):
        codec.verify(genuine + "A" * 8000)
    for app_id in ("", "bad id", "a/b", "x" * 65, "é"):
        with pytest.raises(TokenInvalid, match="malformed"):
            codec.verify(f"{app_id}~{genuine.partition('~')[2]}")


def test_unknown_apps_are_refused_before_a_key_is_derived_for_them() -> None:
    fresh = TokenCodec(["old-secret-0123456789"])
    for n in range(2000):
        with pytest.raises(TokenInvalid):
            fresh.verify(f"app{n}~e30.c2ln", is_known_app=lambda app_id: False)
    assert fresh.cached_serializers == 0


def test_the_key_cache_is_bounded_even_for_many_apps() -> None:
    fresh = TokenCodec(["old-secret-0123456789"])
    for n in range(3000):
        with pytest.raises(TokenInvalid):
            fresh.verify(f"app{n}~e30.c2ln")
    assert fresh.cached_serializers <= 1024


def test_minted_tokens_fit_the_largest_claims_an_app_may_allow() -> None:
    from tunnel_broker.apps import AppLimits

    ceiling = AppLimits.model_fields["max_token_claims_bytes"].metadata
    largest = max(m.le for m in ceiling if hasattr(m, "le"))
    identity = {"blob": "x" * (largest - 40)}
    claims = ConnectClaims("a" * 64, "tun_" + "t" * 22, "\u4e2d" * 128, time.time() + 60, identity)
    assert len(codec.mint(claims)) <= 7168
