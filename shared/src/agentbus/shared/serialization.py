"""orjson encoding of events: the only serializer on the bus and in the audit store."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def dumps(event: BaseModel) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def dumps_obj(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)
