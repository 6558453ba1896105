"""Webhooks: the business-server side of the broker.

``events`` (tunnel events, encoded once), ``batching`` (what the next request carries,
and when), ``delivery`` (each app's queue and dispatcher), ``sender`` (one batch, signed
and retried until acknowledged), ``http_client`` (the HTTP/1.1 client it posts with),
``signing`` (Standard Webhooks signatures) and ``actions`` (what a reply may ask for).
"""
