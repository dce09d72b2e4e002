"""The gateway's HTTP face: app factory, the RPC-compatible routes, middlewares, health."""
