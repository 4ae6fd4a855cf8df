"""API keys: how they are configured, checked and made.

Keys: ``Authorization: Bearer <key>``. The server keeps only each key's SHA-256 digest
(``V2_API_KEYS`` / ``V2_API_KEYS_FILE``: a JSON list of ``{"id", "key_sha256", "scopes"}``);
a presented key is hashed and compared with every configured digest in constant time. Keys
are long random strings (``make api-key``), so a fast hash is enough: a digest cannot be
turned back into a key.

Scopes nest: ``admin`` ⊇ ``run`` ⊇ ``read``.

* ``read``: status, history, step types, job lists.
* ``run``: execute, schedule, cancel, run a stored job (and everything ``read`` allows).
* ``admin``: create, change and delete stored jobs (and everything ``run`` allows).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.domain.errors import ConfigurationError, FieldError

#: Scopes, weakest first; each includes the ones before it.
SCOPES: tuple[str, ...] = ("read", "run", "admin")
KEY_PREFIX = "jsv2_"
#: Key ids the service itself uses in ``requested_by`` / ``cancelled_by``.
RESERVED_KEY_IDS = frozenset({"schedule"})
_KEY_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ApiKey:
    """An authenticated key: its id (recorded as ``requested_by``) and granted scopes."""

    id: str
    scopes: frozenset[str]
    key_sha256: str = field(repr=False, compare=False, default="")

    def allows(self, scope: str) -> bool:
        """True when the key's strongest scope includes ``scope`` (admin ⊇ run ⊇ read)."""
        return any(SCOPES.index(have) >= SCOPES.index(scope) for have in self.scopes)


def key_digest(key: str) -> str:
    """Hex SHA-256 of a key as configured in ``key_sha256``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(entries: Any, *, source: str = "V2_API_KEYS") -> list[ApiKey]:
    """Validate a key list (the JSON of ``V2_API_KEYS``); ``ConfigurationError`` naming each
    bad entry. Never echoes a digest."""
    if not isinstance(entries, list):
        raise ConfigurationError(
            [FieldError(source, 'must be a JSON list of {"id", "key_sha256", "scopes"}')]
        )
    keys: list[ApiKey] = []
    errors: list[FieldError] = []
    seen_ids: set[str] = set()
    seen_digests: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        unknown = set(entry) - {"id", "key_sha256", "scopes"}
        if unknown:
            errors.append(FieldError(where, f"unknown fields: {', '.join(sorted(unknown))}"))
        key_id, digest, scopes = entry.get("id"), entry.get("key_sha256"), entry.get("scopes")
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            errors.append(FieldError(f"{where}.id", "must be 1-100 letters, digits or _ . : @ -"))
        elif key_id in RESERVED_KEY_IDS:
            errors.append(FieldError(f"{where}.id", f"{key_id!r} is reserved"))
        elif key_id in seen_ids:
            errors.append(FieldError(f"{where}.id", f"duplicate id {key_id!r}"))
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest.lower()):
            errors.append(
                FieldError(f"{where}.key_sha256", "must be 64 hex digits (SHA-256 of the key)")
            )
        elif digest.lower() in seen_digests:
            errors.append(FieldError(f"{where}.key_sha256", "the same key is listed twice"))
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(s, str) and s in SCOPES for s in scopes)
        ):
            errors.append(
                FieldError(f"{where}.scopes", f"must be a non-empty list of {', '.join(SCOPES)}")
            )
        if errors and errors[-1].field.startswith(where):
            continue
        assert isinstance(key_id, str) and isinstance(digest, str) and isinstance(scopes, list)
        seen_ids.add(key_id)
        seen_digests.add(digest.lower())
        keys.append(ApiKey(key_id, frozenset(scopes), digest.lower()))
    if errors:
        raise ConfigurationError(errors)
    return keys


def read_api_keys(inline: list[dict[str, Any]] | None, path: Path | None) -> list[ApiKey]:
    """Keys from ``V2_API_KEYS`` or from the file ``V2_API_KEYS_FILE`` (one of the two)."""
    if inline is not None and path is not None:
        raise ConfigurationError(
            [FieldError("V2_API_KEYS_FILE", "set V2_API_KEYS or V2_API_KEYS_FILE, not both")]
        )
    if path is not None:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                [FieldError("V2_API_KEYS_FILE", f"cannot read {str(path)!r}: {exc.strerror}")]
            ) from None
        except ValueError:
            raise ConfigurationError(
                [FieldError("V2_API_KEYS_FILE", f"{str(path)!r} is not valid JSON")]
            ) from None
        return parse_api_keys(entries, source="V2_API_KEYS_FILE")
    return parse_api_keys(inline, source="V2_API_KEYS") if inline is not None else []


class KeyRing:
    """The configured keys; ``authenticate`` compares digests in constant time."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        """False in open mode (no keys configured)."""
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, key_id: str) -> ApiKey | None:
        """The configured key with this id (console sessions name their key by id)."""
        return next((key for key in self._keys if key.id == key_id), None)

    def authenticate(self, presented: str) -> ApiKey | None:
        digest = key_digest(presented).encode()
        found: ApiKey | None = None
        for key in self._keys:  # every key is compared: the time does not tell which matched
            if hmac.compare_digest(digest, key.key_sha256.encode()):
                found = key
        return found


def new_api_key() -> str:
    """A new random key: ``jsv2_`` and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_entry(key: str, key_id: str, scopes: Sequence[str]) -> dict[str, Any]:
    """The ``V2_API_KEYS`` entry for ``key``."""
    entry = {"id": key_id, "key_sha256": key_digest(key), "scopes": list(scopes)}
    parse_api_keys([entry])  # the same rules the server applies
    return entry
