"""The audit trail's MACs: canonical bytes of an entry, the chain link, keyed MACs with key ids.

Pure functions (no database, no models) shared by the insert-time stamp in `audit.models` and by
the sealer/verifier in `audit.chain`. See `paysvc.audit.chain` for the design.

A stored MAC is `"<key id>:<base64url HMAC-SHA256>"` (56 characters, fits `mac VARCHAR(64)`):
the key id names the service key the MAC key was derived from (`Keyring.derive`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from paysvc.keys.keyring import Keyring

PURPOSE = "audit-chain"
KEY_ID_LENGTH = 12
FIELDS = (
    "id",
    "occurred_at",
    "actor_id",
    "actor_role",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "origin",
    "request_id",
    "details",
)
GENESIS_LINK = bytes(32)
_SEALED = b"paysvc-audit-sealed-v1\n"
_PENDING = b"paysvc-audit-pending-v1\n"
_LINK = b"paysvc-audit-link-v1\n"
_CHECKPOINT = b"paysvc-audit-checkpoint-v1\n"


def fields_of(entry: Any) -> dict[str, Any]:
    """The chained fields of an AuditEntry (ORM object) or of a row mapping."""
    if isinstance(entry, Mapping):
        return {name: entry[name] for name in FIELDS}
    return {name: getattr(entry, name) for name in FIELDS}


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is None:  # databases may hand back naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Built once: `json.dumps` with these options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def canonical(fields: Mapping[str, Any], seq: int | None) -> bytes:
    """Deterministic bytes of every chained field plus the position in the chain."""
    document: dict[str, Any] = {name: fields[name] for name in FIELDS}
    document["occurred_at"] = _timestamp(fields["occurred_at"])
    document["seq"] = seq
    return _ENCODE(document).encode()


def link(previous: Mapping[str, Any] | None, previous_seq: int | None) -> bytes:
    """Key-independent digest of the previous entry (all zeros before the first entry)."""
    if previous is None:
        return GENESIS_LINK
    return link_of(canonical(previous, previous_seq))


def link_of(canonical_bytes: bytes) -> bytes:
    """The link to an entry whose canonical bytes (with its seq) are given."""
    return hashlib.sha256(_LINK + canonical_bytes).digest()


def _mac(keyring: Keyring, key_id: str, message: bytes) -> str:
    key = keyring.derive(PURPOSE, key_id)
    tag = hmac.digest(key, message, "sha256")  # one-shot, in C
    assert len(key_id) == KEY_ID_LENGTH
    return f"{key_id}:{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"


def sealed_mac(
    keyring: Keyring, key_id: str, fields: Mapping[str, Any], seq: int, chain_link: bytes
) -> str:
    """The MAC of a sealed entry: its fields, its seq and the link to its predecessor."""
    return _mac(keyring, key_id, _SEALED + chain_link + canonical(fields, seq))


def sealed_mac_bytes(
    keyring: Keyring, key_id: str, canonical_bytes: bytes, chain_link: bytes
) -> str:
    """`sealed_mac` for canonical bytes already built."""
    return _mac(keyring, key_id, _SEALED + chain_link + canonical_bytes)


def pending_mac(keyring: Keyring, key_id: str, fields: Mapping[str, Any]) -> str:
    """The MAC stamped at insert time (no seq yet), checked by the sealer before sealing."""
    return _mac(keyring, key_id, _PENDING + canonical(fields, None))


def key_id_of(stored: str | None) -> str | None:
    if not stored or ":" not in stored:
        return None
    return stored.split(":", 1)[0]


def _check(keyring: Keyring, stored: str | None, message: bytes) -> str | None:
    key_id = key_id_of(stored)
    if stored is None or key_id is None:
        return "no MAC"
    if key_id not in keyring.key_ids:
        return f"MAC made with key {key_id!r}, which is not in the keyring"
    if not hmac.compare_digest(stored.encode(), _mac(keyring, key_id, message).encode()):
        return "MAC mismatch"
    return None


def check_sealed(
    keyring: Keyring, stored: str | None, fields: Mapping[str, Any], seq: int, chain_link: bytes
) -> str | None:
    """None when `stored` is the right sealed MAC (under the key it names), else the problem."""
    return _check(keyring, stored, _SEALED + chain_link + canonical(fields, seq))


def check_sealed_bytes(
    keyring: Keyring, stored: str | None, canonical_bytes: bytes, chain_link: bytes
) -> str | None:
    """`check_sealed` for canonical bytes already built (the verifier builds them once per
    entry: for this entry's MAC and for the next entry's link)."""
    return _check(keyring, stored, _SEALED + chain_link + canonical_bytes)


def _checkpoint_message(seq: int, entry_id: str, digest: str) -> bytes:
    return _CHECKPOINT + f"{seq}:{entry_id}:{digest}".encode()


def checkpoint_mac(keyring: Keyring, seq: int, entry_id: str, digest: str) -> str:
    """The MAC of a verification checkpoint: entry `seq`/`entry_id` had link digest `digest`."""
    return _mac(keyring, keyring.active_id, _checkpoint_message(seq, entry_id, digest))


def check_checkpoint(
    keyring: Keyring, stored: str | None, seq: int, entry_id: str, digest: str
) -> str | None:
    return _check(keyring, stored, _checkpoint_message(seq, entry_id, digest))


def check_pending(keyring: Keyring, stored: str | None, fields: Mapping[str, Any]) -> str | None:
    """None when `stored` is the right pending MAC (under the key it names), else the problem."""
    return _check(keyring, stored, _PENDING + canonical(fields, None))
