"""``python -m tunnel_broker`` is the same program as the ``tunnel-broker`` script."""

from tunnel_broker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
