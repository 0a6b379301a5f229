"""The gateway's trust boundary: who may call what, with which key, within which quota.

- `keys`: keys (from `api_keys` and the keys file, by sha256), roles and quotas; the mesh secret;
- `policy`: the table of which role may call which method, shared by both ports;
- `guard`: the gRPC interceptor, and what a call knows of its caller (`CALLER`: the key id that
  backends receive instead of the key, the LLM token meter);
- `middleware`: the same on the HTTP port;
- `capmesh.gateway.server.quotas`: the per-key counters (Redis or memory).
"""
