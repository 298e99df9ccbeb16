"""One readable line from a pydantic ValidationError, for messages that say what to fix."""

from __future__ import annotations

from pydantic import ValidationError


def problems(exc: ValidationError, root: str = "(root)") -> str:
    """`field.path: message; …`, with `root` naming an error on the whole document."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in exc.errors())
