"""The network stand-in (``cams-proxy netem``): a TCP relay between a client and a target that adds a WAN.

It adds per-direction latency with jitter (never reordering one connection's bytes), a handshake delay before TLS,
optional TLS termination with a throwaway CA, idle closing of keep-alive connections, and network cuts (refuse:
resets; blackhole: bytes vanish), driven from operator endpoints under ``/__net/``. It does not model packet loss,
bandwidth, reordering across connections or SYN drops. See ``docs/netem.md``.

Modules: `core` (pure decisions), `settings` (the option table), `tls` (certificates), `relay` (asyncio),
`admin` (operator endpoints), `service` (the command).
"""
