"""Registry addressing and push-stream interpretation. Pure."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)
_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "timeout",
    "timed out",
    "eof",
    "503",
    "502",
    "500",
    "504",
    "temporarily",
    "no such host",
    "i/o",
)
_REFUSAL_MARKERS = ("unauthorized", "authentication required", "denied", "forbidden")


def registry_host(registry_url: str) -> str:
    """`host:port` of a registry URL given with or without a scheme."""
    return registry_url.split("://", 1)[-1].rstrip("/")


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def registry_api_base(registry_url: str) -> str:
    """Base URL of the registry API: the given scheme, else http on loopback (as Docker allows)."""
    if "://" in registry_url:
        return registry_url.rstrip("/")
    host = registry_host(registry_url)
    return f"{'http' if is_loopback(host) else 'https'}://{host}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PushOutcome:
    digest: str | None
    error: str | None
    transient: bool


def read_push_stream(chunks: Iterable[Mapping[str, object]]) -> PushOutcome:
    """The digest a push stream reports, or its in-band error (the SDK raises on neither)."""
    digest: str | None = None
    for chunk in chunks:
        error = chunk.get("error")
        detail = chunk.get("errorDetail")
        if error is None and isinstance(detail, Mapping):
            error = detail.get("message")
        if error is not None:
            text = str(error).strip()
            lowered = text.lower()
            refused = any(marker in lowered for marker in _REFUSAL_MARKERS)
            transient = not refused and any(marker in lowered for marker in _TRANSIENT_MARKERS)
            return PushOutcome(digest=None, error=text, transient=transient)
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and isinstance(aux.get("Digest"), str):
            digest = str(aux["Digest"])
    if digest is None:
        return PushOutcome(
            digest=None, error="the push stream ended without a digest", transient=True
        )
    return PushOutcome(digest=digest, error=None, transient=False)
