"""Setting values as the environment gives them: a plain string for a list setting is its
comma-separated items. Used by ``config.py`` and by the engine registry, which validates each
``[engines.NAME]`` table against its engine's own model."""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def as_list(value: Any) -> Any:
    """A list setting's value: a string is its comma-separated items (``"joe"`` -> ``["joe"]``,
    never its letters); anything else is left as it is."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def split_list_strings(model: type[BaseModel], data: Any) -> Any:
    """``data`` for ``model`` with every string given for a list-typed field, in nested sections
    and dict values too, made a list by ``as_list``. Environment values are strings, and
    pydantic would refuse them for a list (an untyped setting would iterate their letters)."""
    if not isinstance(data, Mapping):
        return data
    return {
        key: _listify(model.model_fields[key].annotation, value)
        if key in model.model_fields else value
        for key, value in data.items()
    }  # fmt: skip


def _listify(annotation: Any, value: Any) -> Any:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):  # list[str] | None
        for option in get_args(annotation):
            if option is not type(None):
                value = _listify(option, value)
        return value
    if origin in (list, tuple, set, frozenset):
        return as_list(value)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        _, item_type = get_args(annotation)
        return {key: _listify(item_type, item) for key, item in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return split_list_strings(annotation, value)
    return value
