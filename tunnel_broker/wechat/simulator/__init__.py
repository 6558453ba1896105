"""A local stand-in for WeChat's login API, for development and tests.

Run it with ``python -m tunnel_broker.wechat.simulator`` or mount ``create_simulator_app``.
"""

from tunnel_broker.wechat.simulator.app import create_simulator_app
from tunnel_broker.wechat.simulator.state import (
    Answer,
    SimulatedLogin,
    WeChatSimulator,
    simulated_openid,
    simulated_unionid,
)

__all__ = [
    "Answer",
    "SimulatedLogin",
    "WeChatSimulator",
    "create_simulator_app",
    "simulated_openid",
    "simulated_unionid",
]
