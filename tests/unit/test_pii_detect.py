"""PII detection in ticket text: what is found, what must not be, and how overlaps and replacement behave."""

from __future__ import annotations

import itertools

import phonenumbers
import pytest
from agentbus.shared.pii import Span, find, replace
from agentbus.shared.redaction import redact, redact_text

TICKET = (
    "I'm jane.doe@example.com, call me at +1 415-555-0132 or (415) 555-0199, card 4111 1111 1111 1111, "
    "IBAN DE89 3704 0044 0532 0130 00, ship to 1600 Amphitheatre Parkway, Mountain View, CA 94043"
)


def found(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.value) for s in find(text)]


def test_every_kind_is_found_in_a_realistic_ticket() -> None:
    assert found(TICKET) == [
        ("email", "jane.doe@example.com"),
        ("phone", "+1 415-555-0132"),
        ("phone", "(415) 555-0199"),
        ("card", "4111 1111 1111 1111"),
        ("iban", "DE89 3704 0044 0532 0130 00"),
        ("address", "1600 Amphitheatre Parkway, Mountain View, CA 94043"),
    ]


def test_spans_point_into_the_original_text() -> None:
    spans = find(TICKET)
    assert all(TICKET[s.start : s.end] == s.value for s in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("Ruf mich an: +49 30 901820, danke", "+49 30 901820"),
        ("Handy +49 1512 3456789", "+49 1512 3456789"),
        ("Berlin office +49 (0)30 901820", "+49 (0)30 901820"),
        ("London desk +44 20 7946 0018.", "+44 20 7946 0018"),
        ("mobile: +44 7911 123456", "+44 7911 123456"),
        ("call 415.555.0132 after 5", "415.555.0132"),
    ],
)
def test_german_uk_and_us_phone_numbers(text: str, phone: str) -> None:
    assert found(text) == [("phone", phone)]


@pytest.mark.parametrize(
    "card", ["4111111111111111", "4111-1111-1111-1111", "378282246310005", "3782 822463 10005"]
)
def test_card_numbers_in_their_usual_groupings(card: str) -> None:
    assert found(f"charge {card} please") == [("card", card)]


def test_a_card_number_failing_luhn_is_not_a_card() -> None:
    assert found("card 4111 1111 1111 1112 was declined") == []
    assert found("card 4111111111111112") == []


@pytest.mark.parametrize(
    "iban", ["DE89370400440532013000", "GB29 NWBK 6016 1331 9268 19", "NL91 ABNA 0417 1643 00"]
)
def test_ibans_with_and_without_spaces(iban: str) -> None:
    assert found(f"refund to {iban} please") == [("iban", iban)]


def test_an_iban_with_a_bad_checksum_is_not_an_iban() -> None:
    assert found("IBAN DE88 3704 0044 0532 0130 00") == []
    assert found("IBAN DE88370400440532013000") == []


def test_a_capitalised_word_after_a_grouped_iban_is_not_part_of_it() -> None:
    assert found("pay AT61 1904 3002 3457 3201 THEN close") == [("iban", "AT61 1904 3002 3457 3201")]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Ship to 350 Fifth Avenue\nNew York, NY 10118\nthanks", "350 Fifth Avenue\nNew York, NY 10118"),
        ("deliver to 123 Main St, Springfield, IL 62704.", "123 Main St, Springfield, IL 62704"),
        ("Address: 24 Sussex Drive, Ottawa, ON K1M 1M4", "24 Sussex Drive, Ottawa, ON K1M 1M4"),
        ("I live at Flat 3, 12 High Road, Leeds LS1 4AP", "Flat 3, 12 High Road, Leeds LS1 4AP"),
        ("post it to 10 Downing Street, London SW1A 2AA", "10 Downing Street, London SW1A 2AA"),
        ("ship to 100 Route 66 Road, Springfield, IL 62704", "100 Route 66 Road, Springfield, IL 62704"),
        # pyap sees collapsed whitespace; the span still covers the text exactly as written.
        (
            "ORD-1001 \u2013 to  350 Fifth Avenue ,\r\n\n New York,NY 10118",
            "350 Fifth Avenue ,\r\n\n New York,NY 10118",
        ),
    ],
)
def test_us_canadian_and_uk_addresses(text: str, address: str) -> None:
    assert found(text) == [("address", address)]


@pytest.mark.parametrize(
    "text",
    [
        "please send order ORD-1001 to 123 Main St, Springfield, IL 62704",
        "please send order 1001 to 123 Main St, Springfield, IL 62704",
    ],
)
def test_an_address_does_not_swallow_the_order_number_before_it(text: str) -> None:
    assert found(text) == [("address", "123 Main St, Springfield, IL 62704")]


@pytest.mark.parametrize(
    "text",
    [
        "Refund ORD-1001 for ticket T-1: $20.00 (2000 cents), requested by U-100.",
        "Add U-100 to grp-analytics from 2024-05-01 until 2024-06-30T17:00:00Z.",
        "Order ORD-1002 shipped 2024-05-03, tracking 1Z999AA10123456784, 3 items, 1999 cents each.",
        "Ticket T-17 escalated after 3 attempts (HTTP 503); budget 50000 cents/day.",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736, event 018f3a2b-4c5d-7e6f-8a9b-0c1d2e3f4a5b",
        "the masked address d***@example.com got the link PRL-0A1B2C3D4E",
        "ticket T-4155550132 and https://shop.example.com/orders/4155550132",
    ],
)
def test_domain_identifiers_amounts_and_dates_are_not_pii(text: str) -> None:
    assert find(text) == []


def test_a_bare_ten_digit_number_that_is_a_valid_us_phone_is_taken_for_one() -> None:
    # Documented limit: without a prefix tying it to an id, a NANP-valid 10-digit run reads as a phone.
    assert found("ref 2024050112") == [("phone", "2024050112")]
    assert found("ref 1714550400") == []  # not a valid area code: stays


def test_a_card_wins_over_a_phone_number_on_the_same_digits() -> None:
    text = "pay with 1115 1932 40368 now"
    # phonenumbers alone reads these digits as a valid number; Luhn says card, and the card wins.
    matcher = phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.VALID)
    assert [m.raw_string for m in matcher] == ["1115 1932 40368"]
    assert found(text) == [("card", "1115 1932 40368")]


def test_an_address_after_an_iban_keeps_only_the_address() -> None:
    text = "IBAN AT61 1904 3002 3457 3201 THE END. 10 Downing Street, London SW1A 2AA"
    assert found(text) == [
        ("iban", "AT61 1904 3002 3457 3201"),
        ("address", "10 Downing Street, London SW1A 2AA"),
    ]


def test_replace_substitutes_each_span() -> None:
    out = replace(TICKET, find(TICKET), lambda s: f"<{s.kind}>")
    assert out == ("I'm <email>, call me at <phone> or <phone>, card <card>, IBAN <iban>, ship to <address>")
    assert replace("abc", [], lambda s: "x") == "abc"
    unordered = [Span("email", 4, 6, "ef"), Span("phone", 0, 1, "a")]
    assert replace("abcdef", unordered, lambda s: s.kind) == "phonebcdemail"


def test_redaction_masks_every_kind_and_secret_fields() -> None:
    assert redact_text(TICKET) == (
        "I'm [email], call me at [phone] or [phone], card [card], IBAN [iban], ship to [address]"
    )
    out = redact(
        {
            "refund_id": "pay_0123456789ab",
            "card_number": "4111 1111 1111 1111",
            "customer_email": "dana@example.com",
            "api_key": "sk-live-123",
            "notes": ["call +44 20 7946 0018", "order ORD-1001 for 2000 cents"],
            "amount_cents": 2000,
        }
    )
    assert out == {
        "refund_id": "pay_0123456789ab",
        "card_number": "[card]",
        "customer_email": "[email]",
        "api_key": "[redacted]",
        "notes": ["call [phone]", "order ORD-1001 for 2000 cents"],
        "amount_cents": 2000,
    }
