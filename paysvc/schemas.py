"""Shared marshmallow building blocks: strict integers, metadata, list queries, loading."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from paysvc.errors import InvalidRequest
from paysvc.money import MAX_AMOUNT, normalize_currency


class StrictInt(fields.Integer):
    """An integer that is really an integer: no floats, strings or booleans."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return int(super()._deserialize(value, attr, data, **kwargs))


class Currency(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_currency(text)
        except ValueError as error:
            raise ValidationError(str(error)) from None


def amount_field(*, required: bool) -> StrictInt:
    return StrictInt(
        required=required,
        validate=validate.Range(min=1, max=MAX_AMOUNT),
        metadata={"description": "Integer in the currency's minor unit"},
    )


def _check_metadata(value: Mapping[str, str]) -> None:
    if len(value) > 20:
        raise ValidationError("metadata may have at most 20 keys")


def metadata_field() -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=40)),
        values=fields.String(validate=validate.Length(max=500)),
        validate=_check_metadata,
        load_default=dict,
    )


def metadata_out() -> fields.Dict:
    """`metadata` as rendered (documentation of output schemas)."""
    return fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class QueryInt(fields.Integer):
    """Query strings are text: accept digits only."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not value.isdigit():
            raise self.make_error("invalid")
        return int(value)


class ListQueryArgs(Schema):
    limit = QueryInt(load_default=20, validate=validate.Range(min=1, max=100))
    starting_after = fields.String(load_default=None)


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate with a schema; the first problem becomes a 422 naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("The request body must be a JSON object")
    unstorable = _first_unstorable(data)
    if unstorable is not None:
        raise InvalidRequest(
            f"{unstorable}: must not contain NUL or unpaired surrogate characters",
            param=unstorable,
        )
    try:
        result = schema.load(data)
    except ValidationError as error:
        param, message = _first_error(error.messages)
        if message == "Unknown field.":
            message = f"Unknown parameter: {param}"
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param) from None
    assert isinstance(result, dict)
    return result


def _first_error(messages: Any, prefix: str = "") -> tuple[str | None, str]:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = str(key) if key != "_schema" else ""
            path = f"{prefix}[{name}]" if prefix and name else (name or prefix)
            return _first_error(value, path)
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, str):
            return (prefix or None), first
        return _first_error(first, prefix)
    return (prefix or None), str(messages)


def _unstorable(text: str) -> bool:
    """NUL cannot be stored by PostgreSQL, a lone surrogate by any UTF-8 database."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_unstorable(data: Mapping[str, Any]) -> str | None:
    """The path (`metadata[k]`) of the first key or string value no database can store."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:  # iterative: bodies may be nested hundreds of levels deep
        path, value = stack.pop()
        if isinstance(value, str):
            if _unstorable(value):
                return path or None
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                name = str(key)
                child = f"{path}[{name}]" if path else name
                if _unstorable(name):
                    return path or child
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None
