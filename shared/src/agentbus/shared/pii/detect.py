"""Finds personal data in free text (emails, phones, card numbers, IBANs, postal addresses) as spans."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import phonenumbers
import pyap
from stdnum import iban, luhn

Kind = Literal["email", "phone", "card", "iban", "address"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "address")

# Where two findings overlap the lower rank wins: a checksum-valid card or IBAN is surer than a
# run of digits that also dials somewhere, and an address regex is the loosest of all.
_RANK: dict[str, int] = {"card": 0, "iban": 0, "email": 1, "address": 2, "phone": 3}

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13 to 19 digits, either contiguous or in groups of 4 to 6 then 1 to 5 with one consistent separator
# (4-4-4-4, 4-6-5, 4-4-4-4-3); Luhn decides. `(?<![\w-])` keeps ids such as ORD-4111… out.
CARD = re.compile(r"(?<![\w-])(?:\d{13,19}|\d{4}(?P<sep>[ -])\d{4,6}(?:(?P=sep)\d{1,5}){1,3})(?![\w-])")
# Compact, or printed in groups of four with a shorter last group; the checksum decides, trailing
# groups are dropped while it fails (a following all-caps word can look like a group).
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b")
# A phone number glued to an identifier (T-4155550132, acme:4155550132, /orders/4155550132) is an id.
_ID_JOINT = re.compile(r"\w[-_:/#.]$")
PHONE_REGION = "US"
ADDRESS_COUNTRIES = ("US", "CA", "GB")
# pyap's GB rules take almost any "<number> <word> <letters+digits>" (a date before a tracking
# number reads as an address); a GB match counts only when it ends in a well-formed postcode.
_GB_POSTCODE_END = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$")
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015", "-"))  # as pyap maps them
_GAP = re.compile(r"[\s,]+")
_SEPARATORS = frozenset(" \t\r\n,;:.")


@dataclass(frozen=True)
class Span:
    kind: Kind
    start: int
    end: int
    value: str


def find(text: str) -> list[Span]:
    """Non-overlapping PII spans in `text`, sorted by start."""
    candidates = [*_emails(text), *_cards(text), *_ibans(text), *_addresses(text), *_phones(text)]
    chosen: list[Span] = []
    for candidate in sorted(candidates, key=lambda s: (_RANK[s.kind], s.start, s.start - s.end)):
        span: Span | None = candidate
        if candidate.kind == "address" and _clashing(candidate, chosen):
            span = _address_after(text, candidate, chosen)
        if span is not None and not _clashing(span, chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def _clashing(span: Span, chosen: Iterable[Span]) -> list[Span]:
    return [c for c in chosen if c.start < span.end and span.start < c.end]


def _address_after(text: str, address: Span, chosen: Iterable[Span]) -> Span | None:
    """The part of a clashing address after the last span it clashes with, if that part still reads as
    an address: pyap runs back over whatever precedes a street (an IBAN, a card number)."""
    tail_start = max(c.end for c in _clashing(address, chosen))
    tail = text[tail_start : address.end]
    for found in _addresses(tail):
        if found.end == len(tail):
            return _span("address", text, tail_start + found.start, address.end)
    return None


def replace(text: str, spans: Iterable[Span], replacement: Callable[[Span], str]) -> str:
    """`text` with each of the (non-overlapping) `spans` replaced by `replacement(span)`."""
    parts: list[str] = []
    pos = 0
    for span in sorted(spans, key=lambda s: s.start):
        parts += [text[pos : span.start], replacement(span)]
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _SEPARATORS:
        start += 1
    while end > start and text[end - 1] in _SEPARATORS:
        end -= 1
    return start, end


def _span(kind: Kind, text: str, start: int, end: int) -> Span:
    return Span(kind, start, end, text[start:end])


def _emails(text: str) -> Iterator[Span]:
    for m in EMAIL.finditer(text):
        yield _span("email", text, m.start(), m.end())


def _cards(text: str) -> Iterator[Span]:
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
            yield _span("card", text, m.start(), m.end())


def _ibans(text: str) -> Iterator[Span]:
    for m in IBAN.finditer(text):
        candidate = m.group()
        while True:
            if iban.is_valid(candidate):
                yield _span("iban", text, m.start(), m.start() + len(candidate))
                break
            if " " not in candidate.rstrip():
                break
            candidate = candidate.rsplit(" ", 1)[0]


def _phones(text: str) -> Iterator[Span]:
    # VALID: the number must be assignable in its region's plan and not sit inside other digits or
    # letters, which keeps order ids, amounts, dates and short numbers out.
    for m in phonenumbers.PhoneNumberMatcher(text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID):
        if not _ID_JOINT.search(text[: m.start]):
            yield _span("phone", text, m.start, m.end)


def _addresses(text: str) -> Iterator[Span]:
    normalized, origin = _normalize(text)
    for country in ADDRESS_COUNTRIES:
        for address in pyap.parse(normalized, country=country):
            start, end = _stripped(
                text, origin[_tighten(normalized, country, address)][0], origin[address.match_end - 1][1]
            )
            if country == "GB" and not _GB_POSTCODE_END.search(text[start:end]):
                continue
            yield _span("address", text, start, end)


def _tighten(normalized: str, country: str, address: pyap.address.Address) -> int:
    """Where the address really starts. pyap's street name may hold digits, so it can run back over
    an earlier number ("send order 1001 to 123 Main St, …"); the house number is the last one from
    which the rest still reads as an address ("100 Route 66 Road" stays whole: "66 Road" is none)."""
    start, end = address.match_start, address.match_end
    if not re.search(r"\b\d", getattr(address, "street_name", None) or ""):
        return start
    cuts = [m.start() for m in re.finditer(r"(?<= )\d", normalized[start + 1 : end])]
    for cut in reversed(cuts):
        suffix = normalized[start + 1 + cut : end]
        if any(
            a.match_start == 0 and a.match_end == len(suffix) and getattr(a, "street_number", None)
            for a in pyap.parse(suffix, country=country)
        ):
            return start + 1 + cut
    return start


def _normalize(text: str) -> tuple[str, Sequence[tuple[int, int]]]:
    """The text as pyap normalizes it (a gap with a comma or newline → ", ", other whitespace →
    " ", dashes → "-"), done here with a map back to the original, because pyap reports positions
    in its normalized text only. pyap's own pass then leaves it unchanged."""
    out: list[str] = []
    origin: list[tuple[int, int]] = []
    pos = 0
    for gap in _GAP.finditer(text):
        out.append(text[pos : gap.start()].translate(_DASHES))
        origin += [(i, i + 1) for i in range(pos, gap.start())]
        joint = ", " if ("," in gap.group() or "\n" in gap.group()) else " "
        out.append(joint)
        origin += [(gap.start(), gap.end())] * len(joint)
        pos = gap.end()
    out.append(text[pos:].translate(_DASHES))
    origin += [(i, i + 1) for i in range(pos, len(text))]
    return "".join(out), origin
