"""Every tensor dtype the app meets, in one table: safetensors tag, torch dtype, kind, and how factors are written.

A safetensors header names a dtype by its tag (``BF16``); torch by a name (``bfloat16``).
Converted factors keep the LoRA's own float dtype (``--dtype same``), float64 ones are
written as float32; the ``--dtype`` choices are the dtypes written as themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    tag: str                    # safetensors header tag
    name: str                   # torch.<name>
    kind: str                   # float, fp8, int or bool
    written: str | None = None  # torch name converted factors of this dtype are written in; None: not written
    bytes: int = 1              # bytes per element


TABLE: tuple[DType, ...] = (
    DType("F32", "float32", "float", "float32", 4),
    DType("F16", "float16", "float", "float16", 2),
    DType("BF16", "bfloat16", "float", "bfloat16", 2),
    DType("F64", "float64", "float", "float32", 8),
    DType("F8_E4M3", "float8_e4m3fn", "fp8", None, 1),
    DType("F8_E5M2", "float8_e5m2", "fp8", None, 1),
    DType("I64", "int64", "int", None, 8),
    DType("I32", "int32", "int", None, 4),
    DType("I16", "int16", "int", None, 2),
    DType("I8", "int8", "int", None, 1),
    DType("U8", "uint8", "int", None, 1),
    DType("BOOL", "bool", "bool", None, 1),
)

_BY_NAME = {d.name: d for d in TABLE}
_BY_TAG = {d.tag: d for d in TABLE}

# the --dtype choices: dtypes written as themselves
OUTPUTS: tuple[str, ...] = tuple(d.name for d in TABLE if d.written == d.name)


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tag(dtype) -> str:
    """The safetensors tag of a torch dtype (``F32``, ``BF16``, ``F8_E4M3`` ...); KeyError if it has none."""
    return _BY_NAME[_name(dtype)].tag


def tag_or_name(dtype) -> str:
    """The safetensors tag of a torch dtype, or its torch name where safetensors has no tag for it."""
    name = _name(dtype)
    return _BY_NAME[name].tag if name in _BY_NAME else name


def known(tag) -> DType | None:
    """The table's row for a safetensors tag; None for a tag it does not hold."""
    return _BY_TAG.get(tag) if isinstance(tag, str) else None


def is_float(tag: str) -> bool:
    """True for the tags of the ordinary float dtypes (F32, F16, BF16, F64): what LoRA factors may be."""
    return tag in _BY_TAG and _BY_TAG[tag].kind == "float"


def is_fp8(tag: str) -> bool:
    """True for the tags of the 8-bit float dtypes."""
    return tag in _BY_TAG and _BY_TAG[tag].kind == "fp8"


def written(dtype: str) -> str:
    """The torch dtype name factors are written in, for a ``--dtype`` choice or the LoRA's own tag.

    KeyError for a dtype factors are never written in.
    """
    d = _BY_NAME.get(dtype) if dtype in OUTPUTS else _BY_TAG.get(dtype)
    if d is None or d.written is None:
        raise KeyError(dtype)
    return d.written
