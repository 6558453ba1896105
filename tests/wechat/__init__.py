"""Tests of the WeChat login building blocks (tunnel_broker.wechat)."""
