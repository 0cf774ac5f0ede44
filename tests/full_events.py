"""Events with every field set to a value other than its default, built from the event types
themselves (``msgspec.inspect``), so a field added to an event is exercised by the tests that
use them without anyone listing it: a table that drops it fails its round trip."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import inspect

from polybus.common.events import Event


def every_field_set(event_type: type[Event], n: int = 1) -> Event:
    """An instance of ``event_type`` whose fields all differ from their defaults; ``n`` varies
    the values (ids included) so several instances stay distinct."""
    event = _build(event_type, n)
    assert isinstance(event, event_type)
    return event


def unset_fields(struct: msgspec.Struct) -> list[str]:
    """The fields of ``struct`` that still hold their default (none, for what this builds)."""
    defaults = {
        field.name: field.default
        for field in msgspec.structs.fields(struct)
        if field.default is not msgspec.NODEFAULT
    }
    return [name for name, default in defaults.items() if getattr(struct, name) == default]


def _build(struct_type: type[Any], n: int) -> Any:
    info = inspect.type_info(struct_type)
    assert isinstance(info, inspect.StructType)
    values = {
        field.name: _value(field.type, field.default, field.name, position, n)
        for position, field in enumerate(info.fields)
    }
    return struct_type(**values)


def _value(kind: inspect.Type, default: Any, name: str, position: int, n: int) -> Any:
    if isinstance(kind, inspect.UnionType):  # ``int | None``: the value, never None
        [kind] = [member for member in kind.types if not isinstance(member, inspect.NoneType)]
    if isinstance(kind, inspect.StrType):
        # Subject- and KV-key-safe, unique per field and instance.
        return f"{name.replace('_', '-')}-{n}"
    if isinstance(kind, inspect.BoolType):
        return default is not True
    if isinstance(kind, inspect.IntType):
        # Positive, distinct per field, far from every default, and small enough for an
        # INTEGER column (and for a timestamp column: ns since the epoch).
        return 10_007 * (position + 1) + n
    if isinstance(kind, inspect.LiteralType):
        return next(value for value in kind.values if value != default)
    if isinstance(kind, inspect.VarTupleType | inspect.ListType):
        item = kind.item_type
        assert isinstance(item, inspect.StructType), f"{name}: no builder for {item}"
        items = (_build(item.cls, n * 10 + 1), _build(item.cls, n * 10 + 2))
        return items if isinstance(kind, inspect.VarTupleType) else list(items)
    if isinstance(kind, inspect.StructType):
        return _build(kind.cls, n)
    raise TypeError(f"{name}: no builder for {kind}")
