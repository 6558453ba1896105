"""The SDK's version, sent in ``User-Agent`` so broker logs show which SDKs call it."""

__version__ = "0.1.0"
