"""The Redis backend (``backend.RedisBackend``) and the pieces it is made of.

``keys`` (every key and channel name), ``scripts`` (Lua that changes a record and its
indexes in one step), ``registry`` (tunnel records and indexes), ``leases`` (pod leases
and reaping), ``messages`` (what pods tell each other), ``subscription`` (hearing them),
``order`` (a tunnel's events in order across pods), ``health`` (reachability and the
error path), ``sessions`` (WeChat login sessions) and ``apps`` (the shared apps).
"""
