"""Masking loaded secrets in everything the delivery writes: logs, command output, streams.

Prefect filters only its own API key from logs. Every secret a task loads from a block is
registered here, in every form it can be written in (raw, line by line, base64, URL-encoded,
JSON-escaped, shell-quoted), and each of those forms becomes `***` wherever it appears.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shlex
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "***"
# Shorter forms would mask ordinary words; a secret's shorter pieces (a PEM's last line, say)
# are still masked as part of the whole value.
MIN_FORM_LENGTH = 6


def _base64_forms(raw: bytes) -> set[str]:
    """`raw` as it appears inside any base64 text, whatever its offset: for each of the three
    alignments, the characters that depend on `raw` alone (as in `user:password` auth)."""
    forms = set()
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw).decode()
            start = (offset * 4 + 2) // 3  # the first character not touched by the padding bytes
            end_bits = (offset + len(raw)) * 8
            end = end_bits // 6  # the last character holding only bits of `raw`
            forms.add(encoded[start:end])
            if offset == 0:
                forms.update({encoded, encoded.rstrip("=")})
    return forms


def secret_forms(value: str) -> set[str]:
    """Every form `value` may take in text written by the delivery."""
    candidates = {value, value.strip()}
    candidates.update(line.strip() for line in value.splitlines())
    raw = value.encode()
    candidates.update(_base64_forms(raw))
    candidates.update(
        {
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote(value),
            urllib.parse.quote_plus(value),
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            shlex.quote(value),
        }
    )
    for line in value.splitlines():
        candidates.update({json.dumps(line)[1:-1], urllib.parse.quote(line, safe="")})
    return {form for form in candidates if len(form) >= MIN_FORM_LENGTH}


class Redactor:
    """The registered secrets' forms, masked in any text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.longest = 0

    def add(self, values: Iterable[str]) -> None:
        new = set().union(*(secret_forms(v) for v in values if v)) - self._forms
        if not new:
            return
        with self._lock:
            self._forms |= new
            ordered = sorted(self._forms, key=len, reverse=True)  # longest wins at a position
            self._pattern = re.compile("|".join(re.escape(form) for form in ordered))
            self.longest = len(ordered[0])

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None or not text else pattern.sub(MASK, text)

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Redacts a stream fed in chunks of any size: a secret split across chunks is still
    masked, because the last `longest - 1` characters wait for the next chunk."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        pattern = self._redactor._pattern
        if pattern is None:
            self._held = ""
            return text
        cut = max(0, len(text) - (self._redactor.longest - 1))
        out, position = [], 0
        # Any form starting before `cut` ends within `text`, so its match here is final.
        for match in pattern.finditer(text):
            if match.start() >= cut:
                break
            out += [text[position : match.start()], MASK]
            position = match.end()
        emit_to = max(position, cut)
        out.append(text[position:emit_to])
        self._held = text[emit_to:]
        return "".join(out)

    def finish(self) -> str:
        rest, self._held = self._redactor.redact(self._held), ""
        return rest


SECRETS = Redactor()


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message and traceback before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = SECRETS.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = SECRETS.redact(record.exc_text)
        return True


_FILTER = RedactingFilter()
_installed_on: set[int] = set()


def install() -> None:
    """Put the filter on every handler that exists now (Prefect's API and console handlers
    included); idempotent, and cheap enough to call whenever a secret is registered."""
    loggers = [
        logging.getLogger(),
        *(
            logger
            for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if id(handler) not in _installed_on:
                handler.addFilter(_FILTER)
                _installed_on.add(id(handler))


def register(values: Iterable[str]) -> None:
    SECRETS.add(values)
    install()


def redact(text: str) -> str:
    return SECRETS.redact(text)
