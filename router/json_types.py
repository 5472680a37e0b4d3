"""Parsed JSON checked against a dataclass's annotations: the manifest's field types, named.

Generic over dataclasses, so a field added to the manifest's dataclasses is checked without more
code. Knows str, int, float (finite), bool, None, lists, dicts with str keys, unions and Any.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


def type_problems(tp: Any, value: Any, where: str) -> list[str]:
    """Where `value` (parsed JSON) does not have the type `tp` (a dataclass or a field annotation).

    Generic over the manifest's dataclasses, so a field added to them is checked without more code.
    Unknown keys are left to the constructor, which refuses them.
    """
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return [f"{where} must be an object, got {type(value).__name__}"]
        hints, out = typing.get_type_hints(tp), []
        for f in dataclasses.fields(tp):
            if f.name in value:
                out += type_problems(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.append(f"{where}.{f.name} is missing")
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        arms = [type_problems(a, value, where) for a in args]
        return [] if any(not p for p in arms) else arms[0]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where} must be a list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in type_problems(args[0], v, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return [f"{where} must be an object, got {type(value).__name__}"]
        return [p for k, v in value.items() for p in type_problems(args[1], v, f"{where}.{k}")]
    if tp is type(None):
        return [] if value is None else [f"{where} must be null"]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(tp, True)
    return [] if ok else [f"{where} must be {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r:.40}"]
