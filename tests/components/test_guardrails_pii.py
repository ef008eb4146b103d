"""Personal data: what is found (checksums included), how it is masked, and OPEA's `/v1/pii` route."""

import pytest

from megaservice.components.guardrails import GuardrailsSettings, create_service, load_backend
from megaservice.components.guardrails.pii import find_pii, iban_valid, luhn_valid, mask
from megaservice.testing import client_for

pytestmark = pytest.mark.anyio


def found(text: str) -> list[tuple[str, str]]:
    return [(m.kind, text[m.start : m.end]) for m in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to john.doe+news@mail.example.co.uk.", [("email", "john.doe+news@mail.example.co.uk")]),
        ("call +44 20 7946 0958 today", [("phone", "+44 20 7946 0958")]),
        ("(555) 123-4567 or 555.123.4567", [("phone", "(555) 123-4567"), ("phone", "555.123.4567")]),
        ("06 12 34 56 78, 030 1234567", [("phone", "06 12 34 56 78"), ("phone", "030 1234567")]),
        ("card 4111 1111 1111 1111 ok", [("card", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("card", "3782-822463-10005")]),
        ("IBAN DE89 3704 0044 0532 0130 00.", [("iban", "DE89 3704 0044 0532 0130 00")]),
        ("GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
        ("from 192.168.1.10.", [("ip", "192.168.1.10")]),
        ("v6 2001:db8::8a2e:370:7334 and ::1", [("ip", "2001:db8::8a2e:370:7334"), ("ip", "::1")]),
    ],
)
def test_personal_data_is_found(text, expected):
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "GB00WEST12345698765432 fails mod-97",
        "999.1.1.1 is no address, nor is 1.2.3.4.5",
        "order 1234567890 shipped on 2024-01-15 (15.01.2024) at 12:30:45",
        "In 2023 2024 and 2025 the scores were 12 15 18 20; pi is 3.14159",
        "no at sign here: john.doe at example dot com",
    ],
)
def test_look_alikes_are_not_personal_data(text):
    assert found(text) == []


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE88 3704 0044 0532 0130 00")
    assert not iban_valid("DE89")


def test_masking_styles():
    text = "mail a@b.org, card 4111-1111-1111-1111"
    matches = find_pii(text)
    assert mask(text, matches) == "mail [EMAIL], card [CARD]"
    assert mask(text, matches, "mask") == "mail *******, card *******************"
    randomised = mask(text, matches, "random")
    assert randomised != text and len(randomised) == len(text) and randomised[:5] == "mail " and "@" in randomised


def test_only_the_configured_kinds_are_looked_for():
    assert [m.kind for m in find_pii("a@b.org 192.168.0.1", ["ip"])] == ["ip"]


def service_for(**environ: str):
    settings = GuardrailsSettings.from_env(environ)
    return create_service(settings, load_backend(settings))


async def test_pii_route_reports_types_and_positions_as_opeas_piiresponsedoc():
    prompt = "Hi, I am Ann (ann@example.org), card 4111 1111 1111 1111."
    async with client_for(service_for().app) as client:
        body = (await client.post("/v1/pii", json={"prompt": prompt})).json()
    assert body["new_prompt"] is None
    assert body["detected_pii"] == [
        {"type": "EMAIL_ADDRESS", "start": 14, "end": 29},
        {"type": "CREDIT_CARD", "start": 37, "end": 56},
    ]
    assert prompt[14:29] == "ann@example.org"


async def test_pii_route_replaces_as_asked():
    prompt = "ann@example.org from 10.0.0.7"
    async with client_for(service_for().app) as client:
        category = await client.post("/v1/pii", json={"prompt": prompt, "replace": True, "replace_method": "category"})
        masked = await client.post("/v1/pii", json={"prompt": prompt, "replace": True, "replace_method": "mask"})
        randomised = await client.post("/v1/pii", json={"prompt": prompt, "replace": True})  # OPEA's default
        bad = await client.post("/v1/pii", json={"prompt": prompt, "replace": True, "replace_method": "erase"})
        not_bool = await client.post("/v1/pii", json={"prompt": prompt, "replace": "yes"})
    assert category.json()["new_prompt"] == "[EMAIL] from [IP]"
    assert masked.json()["new_prompt"] == "*************** from ********"
    assert randomised.json()["new_prompt"] != prompt and " from " in randomised.json()["new_prompt"]
    assert bad.status_code == 422 and "`replace_method`" in bad.json()["detail"]
    assert not_bool.status_code == 422 and "`replace`" in not_bool.json()["detail"]


async def test_pii_route_with_a_textdoc_masks_or_refuses_as_configured():
    async with client_for(service_for().app) as client:
        masked = (await client.post("/v1/pii", json={"text": "I'm at +1 (555) 123-4567"})).json()
        toxic = (await client.post("/v1/pii", json={"text": "you idiot"})).json()  # /v1/pii runs PII only
    async with client_for(service_for(GUARDRAILS_PII_ACTION="refuse").app) as client:
        refused = (await client.post("/v1/pii", json={"text": "I'm at +1 (555) 123-4567"})).json()
    assert masked["text"] == "I'm at [PHONE]" and masked["downstream_black_list"] == []
    assert toxic["text"] == "you idiot"
    assert refused["text"] == "Violated policies: pii (phone), please check your input."
    assert refused["downstream_black_list"] == [".*"]


async def test_pii_route_refuses_an_empty_prompt_naming_it():
    async with client_for(service_for().app) as client:
        answer = await client.post("/v1/pii", json={"prompt": ""})
    assert answer.status_code == 422 and "`prompt`" in answer.json()["detail"]
