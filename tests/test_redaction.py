"""The redaction layer: every form of a secret masked, in text and in streams split anywhere."""

from __future__ import annotations

import logging

import pytest

from deliver.redaction import MASK, RedactingFilter, Redactor, secret_forms
from tests import canaries

SECRETS = {
    "token": canaries.TOKEN,
    "pem": canaries.pem_key(),
    "json": canaries.JSON_BLOB,
    "awkward": canaries.AWKWARD,
}


def leaks(text: str, value: str) -> list[str]:
    return [form for form in secret_forms(value) if form in text]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    r = Redactor()
    r.add(SECRETS.values())
    return r


@pytest.mark.parametrize("name", SECRETS)
def test_every_form_is_masked_in_text(redactor, name):
    value = SECRETS[name]
    for form in sorted(secret_forms(value)):
        text = f"before {form} after"
        assert leaks(redactor.redact(text), value) == [], form


def test_base64_inside_a_larger_value_is_masked(redactor):
    """Basic auth encodes `user:password`: the password sits at any base64 alignment."""
    import base64

    for user in ("a", "ab", "abc", "deploy"):
        header = base64.b64encode(f"{user}:{canaries.TOKEN}".encode()).decode()
        assert MASK in redactor.redact(header)
        decoded_tail = redactor.redact(header).replace(MASK, "")
        assert len(decoded_tail) <= (len(user) + 1) * 4 // 3 + 6  # the user's part, a few more


@pytest.mark.parametrize("name", SECRETS)
def test_stream_split_at_every_offset_leaks_nothing(redactor, name):
    value = SECRETS[name]
    for form in sorted(secret_forms(value), key=len)[:: max(1, len(secret_forms(value)) // 6)]:
        stream = f"step 1/3\nusing {form} now\ndone"
        whole = redactor.redact(stream)
        for offset in range(len(stream) + 1):
            chunks = redactor.stream()
            out = chunks.feed(stream[:offset]) + chunks.feed(stream[offset:]) + chunks.finish()
            assert out == whole, (form, offset)
            assert leaks(out, value) == [], (form, offset)


def test_stream_fed_one_character_at_a_time(redactor):
    stream = f"{canaries.TOKEN}|{SECRETS['pem']}|{canaries.AWKWARD}|{canaries.JSON_BLOB}"
    chunks = redactor.stream()
    out = "".join(chunks.feed(c) for c in stream) + chunks.finish()
    assert out == redactor.redact(stream)
    for value in SECRETS.values():
        assert leaks(out, value) == []


def test_log_records_and_tracebacks_are_masked(redactor, monkeypatch):
    import deliver.redaction as redaction

    monkeypatch.setattr(redaction, "SECRETS", redactor)
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "login with %s", (canaries.TOKEN,), None
    )
    try:
        raise RuntimeError(f"refused {canaries.AWKWARD}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert canaries.TOKEN not in record.getMessage()
    assert canaries.AWKWARD not in (record.exc_text or "")
    assert MASK in record.getMessage()


def test_short_values_do_not_mask_ordinary_words():
    r = Redactor()
    r.add(["abc"])
    assert r.redact("abc abcdef") == "abc abcdef"


def test_build_output_comes_out_as_whole_masked_lines(redactor, monkeypatch):
    """However the build stream is cut, its lines are logged whole, and masked."""
    import deliver.redaction as redaction
    from deliver.tasks.docker_image import WholeLines

    monkeypatch.setattr(redaction, "SECRETS", redactor)
    stream = f"Step 1/3 : FROM x\n\nusing {canaries.TOKEN} now\nSuccessfully built abc"
    for offset in range(len(stream) + 1):
        lines = WholeLines()
        out = lines.feed(stream[:offset]) + lines.feed(stream[offset:]) + lines.finish()
        assert out == ["Step 1/3 : FROM x", f"using {MASK} now", "Successfully built abc"], offset


def test_a_secret_too_short_to_mask_is_refused_naming_the_field_not_the_value():
    """Masking text under 6 characters would hide ordinary words, so such a secret is refused
    when loaded rather than left unmasked; the error names the block and field only."""
    from prefect_docker.credentials import DockerRegistryCredentials

    from deliver.errors import BlockInvalid
    from deliver.tasks.loading import refuse_unmaskable_secrets

    short = DockerRegistryCredentials(
        username="ci",
        password="pw12",  # noqa: S106 (a deliberately short test value)
        registry_url="r.example",
    )
    with pytest.raises(BlockInvalid) as refused:
        refuse_unmaskable_secrets(short, "DockerRegistryCredentials", "short-registry")
    assert (refused.value.block, refused.value.field) == ("short-registry", "password")
    assert "pw12" not in str(refused.value)
    long_enough = DockerRegistryCredentials(
        username="ci",
        password="pw12345",  # noqa: S106 (a test value)
        registry_url="r.example",
    )
    refuse_unmaskable_secrets(long_enough, "DockerRegistryCredentials", "registry")


def test_the_prefect_api_auth_string_is_masked_once_a_block_could_be_loaded():
    """Whoever reads the auth string can drive the API: it is a registered secret."""
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    from deliver.redaction import redact
    from deliver.tasks.loading import register_prefect_credentials

    auth = "admin:api-auth-canary-5Jq8Wz"
    with temporary_settings(updates={PREFECT_API_AUTH_STRING: auth}):
        register_prefect_credentials()
    assert (
        redact(f"curl -u {auth} http://127.0.0.1:4200/api")
        == "curl -u *** http://127.0.0.1:4200/api"
    )
