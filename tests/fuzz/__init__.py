"""Fuzzing that runs in CI: bounded in examples and time, derandomized.

Each module starts its own broker as a child process (so its memory and log are its own)
and drives it with synchronous clients from hypothesis examples:

- ``test_openapi_schemathesis``: every operation of ``/openapi.json`` (schemathesis);
- ``test_ws_frames``: raw WebSocket frames after the handshake (``wsframes.py``);
- ``test_webhook_replies``: whatever a webhook receiver answers (``replies.py``);
- ``test_wechat_login``: the WeChat login endpoint and its per-client budget.

The whole directory takes about 80 s on two cores. ``TB_FUZZ_EXAMPLES=10`` runs ten
times as many examples (and allows ten times the time) for a longer local session;
``TB_FUZZ_SHRINK=1`` lets hypothesis shrink a failing example (slow: every step talks to
the broker).
"""
