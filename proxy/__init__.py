"""cams-proxy: a caching, rate-limited read-through gateway for Alibaba Cloud CAMS, and its simulator."""

__version__ = "0.1.0"
