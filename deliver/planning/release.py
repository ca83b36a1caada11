"""What a release decides from values alone: slots, names, history, pruning, argument safety."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from typing import Any

DIGEST_REFERENCE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"@(?P<digest>sha256:[0-9a-f]{64})$"
)
VERSION_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
GIT_SHA = re.compile(r"^[0-9a-f]{7,40}$")
PERSON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Slot(enum.Enum):
    BLUE = "blue"
    GREEN = "green"

    @property
    def idle(self) -> Slot:
        return Slot.GREEN if self is Slot.BLUE else Slot.BLUE


def image_reference_problem(reference: str) -> str | None:
    """None for `repository@sha256:<64 hex>`; a bare tag or anything else says why not."""
    if DIGEST_REFERENCE.match(reference):
        return None
    if "@" not in reference:
        return "an image by digest is required (name@sha256:<64 hex>), not a tag"
    return "expected name@sha256:<64 lowercase hex>"


def label_problem(kind: str, value: str) -> str | None:
    """Versions, shas and people's names are plain tokens: no spaces, quotes or shell syntax."""
    pattern = {"version": VERSION_LABEL, "git_sha": GIT_SHA, "person": PERSON}[kind]
    if pattern.match(value):
        return None
    return f"{kind} {value!r} must match {pattern.pattern}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    version: str
    image: str  # repository@sha256:...
    git_sha: str
    slot: Slot
    since: str  # ISO 8601

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]

    def to_json(self) -> dict[str, str]:
        return {
            "version": self.version,
            "image": self.image,
            "git_sha": self.git_sha,
            "slot": self.slot.value,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        return cls(
            version=str(data["version"]),
            image=str(data["image"]),
            git_sha=str(data["git_sha"]),
            slot=Slot(data["slot"]),
            since=str(data["since"]),
        )


class Outcome(enum.StrEnum):
    """How a release or rollback ended: in the host's history, the event, the report, the notice."""

    LIVE = "live"  # the new version serves
    FAILED = "failed"  # it never served traffic; the old version kept serving
    SWITCHED_BACK = "switched-back"  # it served, failed its checks, traffic moved back
    ROLLED_BACK = "rolled-back"  # an operator put a kept version back
    RECONCILED = "reconciled"  # the host's record was corrected to what really serves


# Host history written before the one vocabulary called a release that went live "released".
_LEGACY_HISTORY = {"released": Outcome.LIVE}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    approver: str
    reason: str
    at: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRecord:
    """One entry of a host's history: a release, a rollback, a failure or a reconciliation."""

    at: str
    outcome: Outcome
    version: str
    image: str
    git_sha: str = ""
    requested_by: str = ""
    flow_run: str = ""
    began: str = ""
    detail: str = ""
    approval: Approval | None = None
    checks: tuple[str, ...] = ()  # what passed before it went live: health, each smoke check
    migration: str = ""  # the migration command this release ran, if it ran one
    accessories_booted: tuple[str, ...] = ()  # accessories it found absent and booted

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "at": self.at,
            "outcome": self.outcome.value,
            "version": self.version,
            "image": self.image,
            "git_sha": self.git_sha,
            "requested_by": self.requested_by,
            "flow_run": self.flow_run,
            "began": self.began,
            "detail": self.detail[:500],
            "checks": list(self.checks),
        }
        if self.migration:
            data["migration"] = self.migration
        if self.accessories_booted:
            data["accessories_booted"] = list(self.accessories_booted)
        if self.approval is not None:
            data["approval"] = dataclasses.asdict(self.approval)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HistoryRecord:
        outcome = str(data.get("outcome", ""))
        approval = data.get("approval")
        return cls(
            at=str(data.get("at", "")),
            outcome=_LEGACY_HISTORY.get(outcome) or Outcome(outcome),
            version=str(data.get("version", "")),
            image=str(data.get("image", "")),
            git_sha=str(data.get("git_sha", "")),
            requested_by=str(data.get("requested_by", "")),
            flow_run=str(data.get("flow_run", "")),
            began=str(data.get("began", "")),
            detail=str(data.get("detail", "")),
            approval=Approval(**approval) if isinstance(approval, dict) else None,
            checks=tuple(str(check) for check in data.get("checks", [])),
            migration=str(data.get("migration", "")),
            accessories_booted=tuple(str(name) for name in data.get("accessories_booted", [])),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostState:
    """What a host keeps about its app: the live release, the kept images, and the history."""

    live: Release | None
    kept: tuple[str, ...]  # images by digest, newest first
    history: tuple[HistoryRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "live": self.live.to_json() if self.live else None,
            "kept": list(self.kept),
            "history": [record.to_json() for record in self.history],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> HostState:
        if not data:
            return cls(live=None, kept=(), history=())
        live = data.get("live")
        return cls(
            live=Release.from_json(live) if live else None,
            kept=tuple(data.get("kept", [])),
            history=tuple(HistoryRecord.from_json(r) for r in data.get("history", [])),
        )


HISTORY_KEPT = 50


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseResult:
    """What a finished release or rollback returns: where it is live, and what it replaced."""

    environment: str
    version: str
    image: str
    slot: str  # the live slot, or each host's, comma-separated
    url: str
    previous: str | None
    pruned: tuple[str, ...]
    timings_s: dict[str, float]
    approval: Approval | None = None


def target_slot(state: HostState, serving: Slot | None = None) -> Slot:
    """The slot a new version starts in: the one neither live nor behind the front (`serving`,
    the slot nginx points at), so a candidate never takes traffic before its switch."""
    if state.live is not None:
        return state.live.slot.idle
    return serving.idle if serving is not None else Slot.BLUE


ENVIRONMENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
APPROVED_ENVIRONMENT = "production"  # its releases wait for a human approval


def environment_name_problem(name: str) -> str | None:
    """Why `name` cannot name an environment (it names limits, containers, blocks), or None."""
    if ENVIRONMENT_NAME.fullmatch(name):
        return None
    return f"an environment name is lowercase letters, digits and dashes, like qa; not {name!r}"


def container_name(app: str, environment: str, slot: Slot, host: str = "") -> str:
    """A fleet's hosts name theirs after the host too, so hosts sharing an engine never clash."""
    return "-".join(part for part in (app, environment, host, slot.value) if part)


def kept_after(
    state: HostState, new_image: str, keep: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(kept, pruned): the newest `keep` images with the new one first; the live one never goes."""
    ordered = [new_image, *[image for image in state.kept if image != new_image]]
    kept = ordered[:keep]
    pruned = tuple(image for image in ordered[keep:] if image != new_image)
    return tuple(kept), pruned


def after_success(
    state: HostState, release: Release, keep: int, record: HistoryRecord
) -> tuple[HostState, tuple[str, ...]]:
    """The host's state once `release` is live, and the images to prune."""
    kept, pruned = kept_after(state, release.image, keep)
    history = (*state.history, record)[-HISTORY_KEPT:]
    return HostState(live=release, kept=kept, history=history), pruned


def after_failure(state: HostState, record: HistoryRecord) -> HostState:
    history = (*state.history, record)[-HISTORY_KEPT:]
    return HostState(live=state.live, kept=state.kept, history=history)


def smoke_problem(
    status: int, body: Any, *, expected_status: int, json_field: str | None, equals: Any
) -> str | None:
    """None when a smoke response is as expected, else what differs."""
    if status != expected_status:
        return f"answered {status}, expected {expected_status}"
    if json_field is None:
        return None
    if not isinstance(body, dict) or json_field not in body:
        return f"no JSON field {json_field!r} in the answer"
    if equals is not None and body[json_field] != equals:
        return f"{json_field} is {body[json_field]!r}, expected {equals!r}"
    return None


UPSTREAM_GROUP = "production_app"


def nginx_upstreams(*, slot_ports: Mapping[Slot, int], host: str = "127.0.0.1") -> str:
    """The upstream file nginx includes (in `http`): a group per slot. Which of them takes the
    traffic is not in it but in the slot marker (`green_marker`), read by nginx per request, so
    a switch never reloads nginx (a reload closes clients' idle kept-alive connections, and a
    request sent on one just then fails)."""
    return "".join(
        f"upstream {UPSTREAM_GROUP}_{slot.value} {{\n"
        f"    server {host}:{slot_ports[slot]};\n    keepalive 8;\n}}\n"
        for slot in Slot
    )


def green_marker(upstream_file: str) -> str:
    """The file whose presence sends the traffic to green (absent: blue)."""
    return f"{upstream_file}.green"


def nginx_slot_routing(upstream_file: str) -> str:
    """The proxied location's lines that pick the slot's group by the marker, per request."""
    return (
        "set $deliver_slot blue;\n"
        f"if (-f {green_marker(upstream_file)}) {{\n    set $deliver_slot green;\n}}\n"
        f"proxy_pass http://{UPSTREAM_GROUP}_$deliver_slot;\n"
    )


def serving_slot(
    upstream_text: str, *, green_marked: bool, slot_ports: Mapping[Slot, int]
) -> Slot | None:
    """The slot nginx sends traffic to, from its upstream file and the marker; an upstream file
    of one group (before slot markers) names the slot by its port."""
    if f"upstream {UPSTREAM_GROUP}_{Slot.BLUE.value} " in upstream_text:
        return Slot.GREEN if green_marked else Slot.BLUE
    return next((slot for slot, port in slot_ports.items() if f":{port};" in upstream_text), None)


def rollback_choice(state: HostState, to_version: str | None) -> tuple[str, str, str] | str:
    """(image, version, git_sha) to roll back to, or why there is none.

    Without `to_version`: the newest kept image that is not live. Versions come from the history.
    """
    known: dict[str, tuple[str, str]] = {}
    for record in state.history:
        if record.outcome in {Outcome.LIVE, Outcome.ROLLED_BACK}:
            known[record.image] = (record.version, record.git_sha)
    live_image = state.live.image if state.live else None
    candidates = [image for image in state.kept if image != live_image and image in known]
    if to_version is not None:
        candidates = [image for image in candidates if known[image][0] == to_version]
    if not candidates:
        kept = ", ".join(known[i][0] for i in state.kept if i in known and i != live_image)
        wanted = f"version {to_version}" if to_version else "an earlier version"
        return f"no kept {wanted} to roll back to (kept besides the live one: {kept or 'none'})"
    image = candidates[0]
    return image, known[image][0], known[image][1]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunningSlot:
    slot: Slot
    version: str
    image: str
    run: str = ""  # the flow run that started it


def reconcile(
    state: HostState, running: list[RunningSlot], serving: Slot | None, *, now: str
) -> HostState | None:
    """The state a host is really in when it differs from its record (a release killed midway).

    `serving` is the slot nginx sends traffic to (None without nginx). What serves wins: a
    running container in the serving slot, or, without nginx, the only running slot.
    """
    by_slot = {r.slot: r for r in running}
    if serving is not None:
        actual = by_slot.get(serving)
    else:
        recorded = state.live.slot if state.live else None
        actual = None if recorded in by_slot else (running[0] if len(running) == 1 else None)
    if actual is None or (state.live is not None and state.live.slot is actual.slot):
        return None
    same_image = state.live is not None and state.live.image == actual.image
    git_sha = state.live.git_sha if state.live is not None and same_image else "0000000"
    live = Release(
        version=actual.version, image=actual.image, git_sha=git_sha, slot=actual.slot, since=now
    )
    record = HistoryRecord(
        at=now,
        outcome=Outcome.RECONCILED,
        version=actual.version,
        image=actual.image,
        detail="the recorded live slot was not the one serving",
    )
    kept = (actual.image, *[image for image in state.kept if image != actual.image])
    return HostState(live=live, kept=kept, history=(*state.history, record)[-HISTORY_KEPT:])
