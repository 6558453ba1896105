"""``python -m demo_business_app``: serve the demo business server (see ``config`` for flags).

``scripts/demo.sh`` starts it next to a broker and the WeChat simulator; run it by hand
only against a broker whose app ``demo`` sends its webhooks to this server's ``/webhook``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import uvicorn

from demo_business_app.config import parse_config
from demo_business_app.web import create_app


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call is noise
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
