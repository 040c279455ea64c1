"""Encrypted attributes: plaintext in Python, AES-GCM ciphertext in a `<name>_enc` column.

The associated data binds each value to `table.field.row-id`, so a ciphertext copied to another
row or column fails to decrypt. The keyring travels in `Session.info["keyring"]` (set by
`Database`), never in a global: values are sealed in `before_flush` and opened on `load`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from sqlalchemy import event
from sqlalchemy.orm import Session

from paysvc.keys.keyring import Keyring

_PENDING = "pending"  # placeholder that marks the column dirty until before_flush seals it


class Encrypted:
    """Descriptor for one encrypted field; `as_json` stores dicts/lists as JSON text."""

    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        fields = dict(getattr(owner, "__encrypted__", {}))
        fields[name] = self
        owner.__encrypted__ = fields  # type: ignore[attr-defined]

    @property
    def column(self) -> str:
        return f"{self.name}_enc"

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return _plain(obj).get(self.name)

    def __set__(self, obj: object, value: Any) -> None:
        _plain(obj)[self.name] = value
        setattr(obj, self.column, None if value is None else _PENDING)

    def seal(self, obj: Any, keyring: Keyring) -> None:
        value = _plain(obj).get(self.name)
        if value is None:
            setattr(obj, self.column, None)
            return
        text = json.dumps(value, sort_keys=True) if self.as_json else str(value)
        setattr(obj, self.column, keyring.encrypt(text, self.associated(obj)))

    def open(self, obj: Any, keyring: Keyring) -> None:
        envelope = getattr(obj, self.column)
        if envelope is None:
            _plain(obj)[self.name] = None
            return
        text = keyring.decrypt(envelope, self.associated(obj))
        _plain(obj)[self.name] = json.loads(text) if self.as_json else text

    def associated(self, obj: Any) -> str:
        return self.associated_for(obj.__tablename__, obj.id)

    def associated_for(self, table: str, row_id: str) -> str:
        return f"{table}.{self.name}.{row_id}"


class EncryptedModel:
    """Mixin marking a model that has Encrypted fields."""

    __encrypted__: ClassVar[dict[str, Encrypted]]

    def reseal(self) -> None:
        """Mark every encrypted value for re-encryption under the active key (key rotation)."""
        for field in self.__encrypted__.values():
            if getattr(self, field.column) is not None:
                setattr(self, field.column, _PENDING)

    def key_ids(self) -> set[str]:
        return {
            Keyring.key_id_of(envelope)
            for field in self.__encrypted__.values()
            if (envelope := getattr(self, field.column)) is not None and envelope != _PENDING
        }


def _plain(obj: object) -> dict[str, Any]:
    store: dict[str, Any] = obj.__dict__.setdefault("_paysvc_plain", {})
    return store


def keyring_of(session: Session) -> Keyring:
    keyring = session.info.get("keyring")
    if not isinstance(keyring, Keyring):
        raise RuntimeError("session has no keyring: build sessions through paysvc.db.Database")
    return keyring


@event.listens_for(Session, "before_flush")
def _seal_pending(session: Session, _context: object, _instances: object) -> None:
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, EncryptedModel):
            seal_all(obj, session)


def seal_all(obj: EncryptedModel, session: Session) -> None:
    """Encrypt every value set since the last seal, with the session's keyring."""
    for field in obj.__encrypted__.values():
        if getattr(obj, field.column) == _PENDING:
            field.seal(obj, keyring_of(session))


def open_all(obj: EncryptedModel, session: Session) -> None:
    for field in obj.__encrypted__.values():
        field.open(obj, keyring_of(session))
