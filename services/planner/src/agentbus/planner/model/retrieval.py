"""Lexical retrieval (BM25) over a workflow's policy document, section by section, so a model
sees the few sections that matter and every answer can cite their ids ("§3.2")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rank_bm25 import BM25Okapi

HEADING = re.compile(r"^##\s+(§\d+(?:\.\d+)*)\s+(.+)$", re.MULTILINE)
WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about which section applies.
STOPWORDS = frozenset(
    WORD.findall(
        "a an and are as at be by for from has have i in is it me my of on "
        "or our please the this to was we with you your"
    )
)


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    text: str


def parse_sections(markdown: str) -> list[Section]:
    """`## §3.2 Title` headings split the document; the text runs to the next heading."""
    matches = list(HEADING.finditer(markdown))
    sections = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(markdown)
        body = markdown[match.end() : end].strip()
        sections.append(Section(id=match.group(1), title=match.group(2).strip(), text=body))
    return sections


SUFFIX = re.compile(r"(ing|ed|es|s)$")


def words(text: str) -> list[str]:
    """Lower-case words without stopwords, crudely stemmed so "refunded" meets "refund"."""
    return [SUFFIX.sub("", w) if len(w) > 4 else w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


class PolicyIndex:
    def __init__(self, sections: list[Section]) -> None:
        if not sections:
            raise ValueError("a policy document needs at least one '## §N.N Title' section")
        self.sections = sections
        self._words = [set(words(f"{s.title} {s.text}")) for s in sections]
        self._bm25 = BM25Okapi([words(f"{s.title} {s.text}") for s in sections])

    def search(self, query: str, k: int = 4) -> list[Section]:
        """The k best sections for `query`, best first. Only sections sharing a word with the query
        qualify; BM25 orders them (in a small document a common word can score zero, so the
        number of shared words breaks ties)."""
        terms = words(query)
        scores = self._bm25.get_scores(terms) if terms else []
        shared = [len(self._words[i].intersection(terms)) for i in range(len(self.sections))]
        candidates = [i for i in range(len(self.sections)) if shared[i]]
        ranked = sorted(candidates, key=lambda i: (-scores[i], -shared[i], i))
        return [self.sections[i] for i in ranked[:k]]


class PolicyLibrary:
    """`<policies_dir>/<workflow>/policy.md`, parsed once per workflow."""

    def __init__(self, policies_dir: Path) -> None:
        self.policies_dir = policies_dir
        self._indexes: dict[str, PolicyIndex] = {}

    def index(self, workflow: str) -> PolicyIndex:
        if workflow not in self._indexes:
            path = self.policies_dir / workflow / "policy.md"
            try:
                text = path.read_text()
            except OSError as exc:
                raise FileNotFoundError(f"workflow {workflow!r} has no policy document at {path}") from exc
            self._indexes[workflow] = PolicyIndex(parse_sections(text))
        return self._indexes[workflow]
