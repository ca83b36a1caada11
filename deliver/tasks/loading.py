"""Blocks and HTTP clients as the tasks of one flow run share them.

A block is loaded once per flow run, and its secrets registered for redaction: every step of a
run sees the same settings, and a release's dozen SSH steps don't each pay an API round trip.
Outside a flow run it is loaded every time.
Every HTTP client shares one TLS context, whose CA bundle costs ~20 ms to load.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
from typing import Any, TypeVar, cast

import certifi
import httpx
from prefect.blocks.core import Block
from prefect.runtime import flow_run
from prefect.settings import get_current_settings
from pydantic import BaseModel, Secret, SecretBytes, SecretStr, ValidationError

from deliver import redaction
from deliver.errors import BlockInvalid

B = TypeVar("B", bound=Block)

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], Block] = {}


def register_prefect_credentials() -> None:
    """The Prefect API's own credentials (the auth string, an API key) are secrets too: anyone
    who reads them can drive the API. Registered for redaction wherever a block is loaded."""
    api = get_current_settings().api
    redaction.register(
        [value.get_secret_value() for value in (api.auth_string, api.key) if value is not None]
    )


def load_block(block_type: type[B], name: str) -> B:
    """`block_type.load(name)`, once per flow run."""
    register_prefect_credentials()
    run = str(flow_run.get_id() or "")
    key = (run, block_type.__name__, name)
    with _lock:
        cached = _loaded.get(key) if run else None
    if cached is not None:
        return cast(B, cached)
    try:
        # Sync even when called from an async flow's body, which would otherwise get a coroutine.
        block = cast(B, cast(Any, block_type).load(name, _sync=True))
    except (ValidationError, RuntimeError) as exc:
        # Prefect raises RuntimeError("... failed validation") from the ValidationError.
        invalid = exc if isinstance(exc, ValidationError) else exc.__cause__
        if not isinstance(invalid, ValidationError):
            raise
        first = invalid.errors()[0]  # its "msg" and "loc" only: "input" would show the value
        field = ".".join(str(part) for part in first["loc"]) or "(block)"
        raise BlockInvalid(
            block_type=block_type.__name__, block=name, field=field, detail=first["msg"]
        ) from None
    refuse_unmaskable_secrets(block, block_type.__name__, name)
    redaction.register(secret_values(block))
    if run:
        with _lock:
            for stale in [k for k in _loaded if k[0] != run]:
                del _loaded[stale]
            _loaded[key] = block
    return block


def refuse_unmaskable_secrets(block: BaseModel, block_type: str, name: str) -> None:
    """A secret too short to be masked in logs (under MIN_FORM_LENGTH characters: masking
    shorter text would hide ordinary words) is refused when loaded, naming the block and field,
    never the value. Inside a JSON secret, its text values are held to the same rule; its
    numbers and booleans are masked as part of the whole value only."""
    for field in type(block).model_fields:
        for leaf in [t for raw in _secrets_in(getattr(block, field)) for t in _texts(raw)]:
            if len(leaf) < redaction.MIN_FORM_LENGTH:
                raise BlockInvalid(
                    block_type=block_type,
                    block=name,
                    field=field,
                    detail=f"a secret shorter than {redaction.MIN_FORM_LENGTH} characters "
                    "cannot be masked in logs; set a longer one",
                )


def _texts(value: Any) -> list[str]:
    """The text a secret holds: itself, or each text value inside its JSON."""
    if isinstance(value, bytes):
        return [value.decode(errors="replace")]
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _texts(item)]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def secret_values(value: Any) -> list[str]:
    """Every secret a block holds, however deeply nested (a dict of per-approver secrets...)."""
    return [leaf for raw in _secrets_in(value) for leaf in secret_leaves(raw)]


def _secrets_in(value: Any) -> list[Any]:
    """The secret values inside `value`: its SecretStr and Secret fields, however nested."""
    if isinstance(value, SecretStr | SecretBytes | Secret):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [s for field in type(value).model_fields for s in _secrets_in(getattr(value, field))]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _secrets_in(item)]
    if isinstance(value, list | tuple | set):
        return [s for item in value for s in _secrets_in(item)]
    return []


def secret_leaves(value: Any) -> list[str]:
    """A secret's text: itself if text, else its JSON and every string inside it."""
    if isinstance(value, bytes):
        return [value.decode(errors="replace")]
    if isinstance(value, str):
        return [value]
    leaves = [json.dumps(value)] if isinstance(value, dict | list) else [str(value)]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return leaves + [leaf for item in items for leaf in secret_leaves(item)]


@functools.cache
def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


def http_client(**options: Any) -> httpx.Client:
    return httpx.Client(verify=tls_context(), **options)
