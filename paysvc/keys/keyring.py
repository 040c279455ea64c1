"""AES-256-GCM envelope encryption with key ids and row-binding associated data."""

from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"


class DecryptionError(Exception):
    """A value could not be decrypted: unknown key, wrong row, or tampered bytes."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"paysvc-key-id:" + key).hexdigest()[:12]


class Keyring:
    """The active key encrypts; the active, retired and next keys decrypt.

    `next` keys are readable before any instance makes them active (phase 1 of a rolling
    rotation); `retired` keys stay readable after (until `keys rotate` has moved everything)."""

    def __init__(
        self, active: bytes, retired: tuple[bytes, ...] = (), next: tuple[bytes, ...] = ()
    ) -> None:
        if len(active) != 32 or any(len(k) != 32 for k in (*retired, *next)):
            raise ValueError("encryption keys must be 32 bytes")
        self.active_id = key_id(active)
        self.next_ids = frozenset(key_id(k) for k in next) - {self.active_id}
        self._keys = {key_id(k): AESGCM(k) for k in (*retired, *next, active)}
        self._raw = {key_id(k): k for k in (*retired, *next, active)}
        self._derived: dict[tuple[str, str], bytes] = {}  # (purpose, key id) -> subkey
        self.used_active = False  # set once anything is encrypted or MACed under the active key

    def __reduce__(
        self,
    ) -> tuple[type[Keyring], tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]]:
        """Picklable for worker processes (the AES objects are rebuilt from the raw keys)."""
        others = {kid: k for kid, k in self._raw.items() if kid != self.active_id}
        retired = tuple(k for kid, k in others.items() if kid not in self.next_ids)
        upcoming = tuple(k for kid, k in others.items() if kid in self.next_ids)
        return (Keyring, (self._raw[self.active_id], retired, upcoming))

    def export(self) -> str:
        """The keys as text, for a child process's environment (`imported` reads it back)."""
        active, retired, upcoming = self.__reduce__()[1]
        return json.dumps(
            {
                "active": base64.b64encode(active).decode(),
                "retired": [base64.b64encode(k).decode() for k in retired],
                "next": [base64.b64encode(k).decode() for k in upcoming],
            }
        )

    @classmethod
    def imported(cls, text: str) -> Keyring:
        keys = json.loads(text)
        return cls(
            base64.b64decode(keys["active"]),
            tuple(base64.b64decode(k) for k in keys["retired"]),
            tuple(base64.b64decode(k) for k in keys["next"]),
        )

    def state(self, kid: str) -> str:
        """active, next, retired, or unknown (not in this keyring)."""
        if kid == self.active_id:
            return "active"
        if kid in self.next_ids:
            return "next"
        return "retired" if kid in self._keys else "unknown"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def derive(self, purpose: str, key_id: str | None = None) -> bytes:
        """A subkey for another purpose (the audit MAC), never stored anywhere.

        Derived from the active key, or from the key `key_id` (active or retired) so that values
        made under a retired key (audit MACs) can still be checked after a rotation.
        """
        kid = self.active_id if key_id is None else key_id
        self.used_active = self.used_active or kid == self.active_id
        derived = self._derived.get((purpose, kid))
        if derived is None:  # derived once per purpose and key (the verifier asks per entry)
            if kid not in self._raw:
                raise DecryptionError(f"no key {kid!r} to derive from")
            raw = self._raw[kid]
            derived = hashlib.sha256(b"paysvc-derive:" + purpose.encode() + b":" + raw).digest()
            self._derived[(purpose, kid)] = derived
        return derived

    def encrypt(self, plaintext: str, associated: str) -> str:
        self.used_active = True
        nonce = os.urandom(12)
        sealed = self._keys[self.active_id].encrypt(nonce, plaintext.encode(), associated.encode())
        return f"{_VERSION}:{self.active_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, envelope: str, associated: str) -> str:
        try:
            version, kid, payload = envelope.split(":", 2)
        except ValueError:
            raise DecryptionError("not an encrypted value") from None
        if version != _VERSION or kid not in self._keys:
            raise DecryptionError(f"no key {kid!r} to decrypt this value")
        try:
            raw = base64.b64decode(payload, validate=True)
            return self._keys[kid].decrypt(raw[:12], raw[12:], associated.encode()).decode()
        except (InvalidTag, ValueError):
            raise DecryptionError("value does not decrypt (tampered or moved)") from None

    @staticmethod
    def key_id_of(envelope: str) -> str:
        return envelope.split(":", 2)[1]
