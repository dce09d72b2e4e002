"""Cache backends behind one small protocol: `MemoryCache` for one process, `RedisCache` shared by many.

Both honour the `Cache` contract in `proxy.cache.base` (checked by one contract suite over every backend):
``get`` never returns an entry past its TTL, body bytes round-trip untouched, and a backend that cannot answer
raises `CacheError` rather than inventing a value.
"""

from proxy.cache.base import Cache, CacheError, Entry
from proxy.cache.memory import MemoryCache
from proxy.cache.redis import RedisCache

__all__ = ["Cache", "CacheError", "Entry", "MemoryCache", "RedisCache"]
