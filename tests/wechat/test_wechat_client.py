"""WeChatClient against the simulator served by a real uvicorn on a loopback port."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.servers import free_port
from tests.wechat.wechat_helpers import SimulatorServer
from tunnel_broker.wechat import (
    Code2Session,
    CodeAlreadyUsed,
    InvalidAppId,
    InvalidAppSecret,
    InvalidCode,
    RateLimited,
    RetryPolicy,
    SecretQueryFilter,
    UnexpectedResponse,
    WeChatBusy,
    WeChatClient,
    WeChatError,
    WeChatUnavailable,
    decrypt_user_data,
    verify_raw_data,
)
from tunnel_broker.wechat.redaction import URL_LOGGERS
from tunnel_broker.wechat.simulator import Answer

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005)


class Recorder:
    """Counts requests (an httpx event hook) and backoff sleeps (the client's sleep)."""

    def __init__(self) -> None:
        self.requests = 0
        self.sleeps: list[float] = []

    async def on_request(self, request: httpx.Request) -> None:
        self.requests += 1

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(wechat: SimulatorServer, recorder: Recorder) -> AsyncIterator[WeChatClient]:
    async with (
        httpx.AsyncClient(event_hooks={"request": [recorder.on_request]}) as http,
        WeChatClient(wechat.base_url, http=http, retry=FAST_RETRY, sleep=recorder.sleep) as client,
    ):
        yield client


async def mint_code(wechat: SimulatorServer, user: str = "alice") -> dict[str, str]:
    async with httpx.AsyncClient(base_url=wechat.base_url) as http:
        response = await http.post(
            "/simulator/login", json={"appid": wechat.appid, "user": user, "nickName": "小明"}
        )
    response.raise_for_status()
    login: dict[str, str] = response.json()
    return login


async def test_login_flow_exchanges_the_code_and_opens_the_user_data(
    wechat: SimulatorServer, client: WeChatClient
) -> None:
    login = await mint_code(wechat)
    session = await client.code_to_session(wechat.appid, wechat.secret, login["code"])
    assert isinstance(session, Code2Session)
    assert session.openid == login["openid"]
    assert session.unionid == login["unionid"]

    user = verify_raw_data(login["rawData"], login["signature"], session.session_key)
    assert user["nickName"] == "小明"
    data = decrypt_user_data(
        login["encryptedData"],
        login["iv"],
        session.session_key,
        wechat.appid,
        expected_openid=session.openid,
    )
    assert data["unionId"] == session.unionid


async def test_an_unknown_code_is_invalid(wechat: SimulatorServer, client: WeChatClient) -> None:
    with pytest.raises(InvalidCode) as caught:
        await client.code_to_session(wechat.appid, wechat.secret, "0" * 32)
    assert caught.value.errcode == 40029


async def test_a_reused_code_is_reported_as_used(
    wechat: SimulatorServer, client: WeChatClient
) -> None:
    code = (await mint_code(wechat))["code"]
    await client.code_to_session(wechat.appid, wechat.secret, code)
    with pytest.raises(CodeAlreadyUsed):
        await client.code_to_session(wechat.appid, wechat.secret, code)


async def test_busy_wechat_is_retried_until_it_answers(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    code = (await mint_code(wechat))["code"]
    wechat.simulator.inject_errcode(-1, times=2)
    session = await client.code_to_session(wechat.appid, wechat.secret, code)
    assert session.openid
    assert recorder.requests == 3
    assert len(recorder.sleeps) == 2
    assert recorder.sleeps[1] >= recorder.sleeps[0] / 2  # backoff with jitter


async def test_busy_forever_gives_up_after_the_bounded_attempts(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    code = (await mint_code(wechat))["code"]
    wechat.simulator.inject_errcode(-1, times=100)
    with pytest.raises(WeChatBusy) as caught:
        await client.code_to_session(wechat.appid, wechat.secret, code)
    assert caught.value.temporary
    assert recorder.requests == FAST_RETRY.attempts
    assert len(recorder.sleeps) == FAST_RETRY.attempts - 1


async def test_rate_limiting_is_not_retried(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    code = (await mint_code(wechat))["code"]
    wechat.simulator.inject_errcode(45011)
    with pytest.raises(RateLimited):
        await client.code_to_session(wechat.appid, wechat.secret, code)
    assert recorder.requests == 1


async def test_a_wrong_secret_is_a_configuration_error(
    wechat: SimulatorServer, client: WeChatClient
) -> None:
    code = (await mint_code(wechat))["code"]
    with pytest.raises(InvalidAppSecret) as caught:
        await client.code_to_session(wechat.appid, wechat.other_secret, code)
    assert caught.value.errcode == 40125
    assert wechat.other_secret not in str(caught.value)


async def test_an_unknown_appid_is_a_configuration_error(
    wechat: SimulatorServer, client: WeChatClient
) -> None:
    with pytest.raises(InvalidAppId):
        await client.code_to_session("wx_not_simulated", wechat.secret, "0" * 32)


async def test_a_garbage_answer_is_unexpected(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    wechat.simulator.inject_fault(Answer("<html>proxy says hi</html>"))
    with pytest.raises(UnexpectedResponse, match="not a JSON object") as caught:
        await client.code_to_session(wechat.appid, wechat.secret, "0" * 32)
    assert caught.value.status_code == 200
    assert recorder.requests == 1


async def test_a_gateway_error_page_is_unavailable_and_not_retried(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    wechat.simulator.inject_fault(Answer("<html>502 Bad Gateway</html>", 502), times=5)
    with pytest.raises(WeChatUnavailable, match="HTTP 502"):
        await client.code_to_session(wechat.appid, wechat.secret, "0" * 32)
    assert recorder.requests == 1


async def test_connection_refused_is_retried_then_unavailable(recorder: Recorder) -> None:
    async with WeChatClient(
        f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY, sleep=recorder.sleep
    ) as client:
        with pytest.raises(WeChatUnavailable, match="cannot connect") as caught:
            await client.code_to_session("wx1", "a-secret", "0" * 32)
    assert caught.value.temporary
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(recorder.sleeps) == FAST_RETRY.attempts - 1


async def test_a_timeout_after_sending_is_not_retried(recorder: Recorder) -> None:
    """WeChat may have consumed the code; a retry would only report CodeAlreadyUsed."""

    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with (
        httpx.AsyncClient(
            transport=httpx.MockTransport(time_out),
            event_hooks={"request": [recorder.on_request]},
        ) as http,
        WeChatClient(http=http, retry=FAST_RETRY, sleep=recorder.sleep) as client,
    ):
        with pytest.raises(WeChatUnavailable, match="ReadTimeout"):
            await client.code_to_session("wx1", "a-secret", "0" * 32)
    assert recorder.requests == 1
    assert recorder.sleeps == []


async def test_an_impossible_code_never_reaches_wechat(
    wechat: SimulatorServer, client: WeChatClient, recorder: Recorder
) -> None:
    with pytest.raises(InvalidCode):
        await client.code_to_session(wechat.appid, wechat.secret, "")
    assert recorder.requests == 0


async def test_a_shared_http_client_stays_open(wechat: SimulatorServer) -> None:
    async with httpx.AsyncClient() as http:
        async with WeChatClient(wechat.base_url, http=http):
            pass
        assert not http.is_closed


async def test_repr_shows_no_credentials(wechat: SimulatorServer) -> None:
    async with WeChatClient(wechat.base_url) as client:
        assert repr(client) == f"WeChatClient(base_url={wechat.base_url!r})"


@pytest.fixture
def unredacted_loggers() -> Iterator[None]:
    """Strip the redaction filters other tests installed, so the client must install them."""
    stripped = {}
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        stripped[name] = [f for f in logger.filters if isinstance(f, SecretQueryFilter)]
        for redaction_filter in stripped[name]:
            logger.removeFilter(redaction_filter)
    yield
    for name, filters in stripped.items():
        for redaction_filter in filters:
            logging.getLogger(name).addFilter(redaction_filter)


@pytest.mark.usefixtures("unredacted_loggers")
async def test_secret_and_session_key_appear_in_no_log_record_nor_error(
    wechat: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[WeChatError] = []
    async with WeChatClient(wechat.base_url, retry=FAST_RETRY) as client:
        login = await mint_code(wechat)
        session = await client.code_to_session(wechat.appid, wechat.secret, login["code"])

        async def failing(secret: str, code: str) -> None:
            with pytest.raises(WeChatError) as caught:
                await client.code_to_session(wechat.appid, secret, code)
            errors.append(caught.value)

        await failing(wechat.secret, login["code"])  # reused
        await failing(wechat.other_secret, (await mint_code(wechat))["code"])  # wrong secret
        wechat.simulator.inject_errcode(-1, times=FAST_RETRY.attempts)
        await failing(wechat.secret, login["code"])  # busy, with retries logged
        wechat.simulator.inject_fault(Answer(f"<html>{wechat.secret}</html>", 502))
        await failing(wechat.secret, login["code"])  # error page echoing the secret
        wechat.simulator.inject_fault(Answer(f'{{"errcode":40125,"errmsg":"bad {wechat.secret}"}}'))
        await failing(wechat.secret, login["code"])  # errmsg echoing the secret
    async with WeChatClient(f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY) as refused:
        with pytest.raises(WeChatUnavailable) as caught:
            await refused.code_to_session(wechat.appid, wechat.secret, login["code"])
        errors.append(caught.value)

    # The URLs were logged (by httpx and by uvicorn's access log), with the secret blanked.
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("HTTP Request: GET") and "secret=***" in m for m in messages)
    assert any("/sns/jscode2session?" in m and "secret=***" in m for m in messages)
    assert any("retry 1 of 2" in m for m in messages)

    secrets = (wechat.secret, wechat.other_secret, session.session_key)
    for secret in secrets:
        assert secret not in caplog.text
        for message in messages:
            assert secret not in message
        assert secret not in repr(session)
        for error in errors:
            assert secret not in str(error)
            assert secret not in repr(error)
            assert secret not in "".join(traceback.format_exception(error))


async def test_an_oversized_answer_is_refused_before_it_is_all_read() -> None:
    import tracemalloc

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from tests.support.servers import run_uvicorn

    async def endless(request: object) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(1_000):  # 64 MB if read to the end
                yield b'{"openid":"' + b"x" * 65_536

        return StreamingResponse(chunks(), media_type="application/json")

    app = Starlette(routes=[Route("/sns/jscode2session", endless)])
    async with run_uvicorn(app) as port, WeChatClient(f"http://127.0.0.1:{port}") as client:
        tracemalloc.start()
        try:
            with pytest.raises(UnexpectedResponse, match="exceeds"):
                await client.code_to_session("wx0123456789abcdef", "secret", "code-123456")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4_000_000, f"the client held {peak} bytes of the answer"
