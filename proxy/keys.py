"""Cache keys: the action plus every parameter that changes the answer, canonicalised.

A key depends on the upstream endpoint, the AccessKeyId the gateway signs with, the action and its
version, and the business parameters sorted by name; never on the method, the path or where the
action name came from. ``IsvCode`` is a credential-like check code, so it enters the key only as a
SHA-256 digest. The whole canonical string is hashed, so keys have a fixed length and no parameter
value is readable from Redis.

Pure: values in, a string out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

KEY_VERSION: Final = "k1"
HASHED_PARAMS: Final = frozenset({"IsvCode"})


def canonical_params(params: Mapping[str, str]) -> str:
    """Sorted ``name=value`` lines; hashed for `HASHED_PARAMS`. Values may hold any character, so each
    part is length-prefixed to keep the encoding unambiguous."""
    parts = []
    for name in sorted(params):
        value = params[name]
        if name in HASHED_PARAMS:
            value = "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()
        parts.append(f"{len(name)}:{name}={len(value)}:{value}")
    return "\n".join(parts)


def cache_key(*, endpoint: str, access_key_id: str, action: str, version: str, params: Mapping[str, str]) -> str:
    """``k1:<Action>:<sha256 of everything that changes the answer>``."""
    canonical = "\n".join((KEY_VERSION, endpoint.rstrip("/"), access_key_id, action, version,
                           canonical_params(params)))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{KEY_VERSION}:{action}:{digest}"
