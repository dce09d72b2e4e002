"""Secret values (AccessKey secrets, tenant tokens) that cannot leak by accident.

A `Secret` prints as ``***`` in `repr`, `str`, f-strings and structlog output, compares in constant
time, and hands out its value only through `reveal()`, so every use of the real value is greppable.
"""

from __future__ import annotations

import hmac
import re
from typing import Final

REDACTED: Final = "***"


class Secret:
    """A string whose value is never printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret value must be a str")
        self._value = value

    def reveal(self) -> str:
        """The real value: call only where it is needed (signing, comparing)."""
        return self._value

    def matches(self, candidate: str) -> bool:
        """Constant-time comparison with a candidate value."""
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and self.matches(other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value somewhere we do not control.
        raise TypeError("Secret values cannot be pickled")


#: ``scheme://user:password@`` in a URL, and ``token=`` / ``password=`` / ``secret=`` style query parameters.
_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
_SECRET_PARAM: Final = re.compile(r"(?i)(?P<name>[?&;](?:[a-z_]*token|password|passwd|secret|signature|"
                                  r"accesskeysecret)=)(?P<value>[^&;\s'\"]*)")


def redact(text: str) -> str:
    """``text`` with the passwords of URLs and the values of secret-looking query parameters replaced by ``***``
    (for echoing a setting the operator gave: ``redis://:hunter2@redis:6379`` prints ``redis://:***@redis:6379``)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{REDACTED}", text)
