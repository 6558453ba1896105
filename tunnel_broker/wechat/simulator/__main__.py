"""``python -m tunnel_broker.wechat.simulator``: serve a simulated WeChat API locally.

    python -m tunnel_broker.wechat.simulator --port 9200 \\
        --appid wx1111111111111111 --secret s3cret --appid wx2222222222222222 --secret other

Then point the broker's WeChat base URL at ``http://127.0.0.1:9200`` and mint logins with::

    curl -X POST localhost:9200/simulator/login \
        -d '{"appid": "wx1111111111111111", "user": "alice", "nickName": "Alice"}'
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from tunnel_broker.wechat.redaction import install_log_redaction
from tunnel_broker.wechat.simulator.app import create_simulator_app

logger = logging.getLogger("tunnel_broker.wechat.simulator")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tunnel_broker.wechat.simulator",
        description="Simulate WeChat's jscode2session for local development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument(
        "--appid", action="append", required=True, help="a simulated app; repeat for several"
    )
    parser.add_argument(
        "--secret", action="append", required=True, help="the secret of the matching --appid"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    if len(args.appid) != len(args.secret):
        parser.error("give exactly one --secret per --appid, in the same order")
    if len(set(args.appid)) != len(args.appid):
        parser.error("each --appid may be given once")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    apps = dict(zip(args.appid, args.secret, strict=True))
    # uvicorn.Config configures logging; the access log shows query strings, secret included.
    config = uvicorn.Config(
        create_simulator_app(apps), host=args.host, port=args.port, log_level=args.log_level
    )
    install_log_redaction()
    logger.warning("simulating WeChat for appids %s", ", ".join(sorted(apps)))
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
