"""Usage of each app: counted on the hot path (``counters.py``), kept in time buckets."""
