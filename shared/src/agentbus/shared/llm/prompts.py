"""Prompt templates are files, versioned by the hash of their content; untrusted text goes into
prompts only inside data fences."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

FENCE_OPEN = "<<<DATA"
FENCE_CLOSE = "<<<END DATA>>>"
# Anything in untrusted text that could close or open a fence is defused.
_FENCE_LIKE = re.compile(r"<<<|>>>")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str

    @property
    def version(self) -> str:
        """`name@<12 hex of sha256>`: changes exactly when the file's content changes."""
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"

    def render(self, **values: str) -> str:
        # substitute(), not safe_substitute(): a missing value is a bug, not a silent "$x".
        return Template(self.text).substitute(values)


def load_template(prompts_dir: Path, name: str) -> PromptTemplate:
    path = prompts_dir / f"{name}.md"
    try:
        return PromptTemplate(name=name, text=path.read_text())
    except OSError as exc:
        raise FileNotFoundError(f"prompt template {name!r} not found at {path}: {exc}") from exc


def fence(source: str, text: str) -> str:
    """Mark `text` as data from `source` (ticket, tool result, policy document): the prompts tell
    the model never to follow instructions found inside a fence."""
    safe = _FENCE_LIKE.sub(lambda m: "<< <" if m.group(0) == "<<<" else "> >>", text)
    return f"{FENCE_OPEN} source={source}>>>\n{safe}\n{FENCE_CLOSE}"
