"""What a release of one image runs with: its runtime facts (from the image's label in the
registry) and its environment's values, secrets read from Prefect `Secret` blocks.

Everything here happens before any host is touched: a required env name with no value, or a
secret that cannot be read, fails the release with nothing changed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

from prefect.blocks.system import Secret

from blocks.deploy_target import DeployTarget
from deliver.errors import BlockInvalid, DeployTargetInvalid, EnvMissing, SecretNotFound
from deliver.planning.runtime import (
    RUNTIME_LABEL,
    SECRET_REFERENCE,
    AccessoryRun,
    EnvFile,
    EnvPlan,
    MissingEnv,
    RuntimeFacts,
    plan_env,
)
from deliver.tasks.loading import load_block
from deliver.tasks.registry import image_labels_in_registry


@functools.lru_cache(maxsize=64)
def _labels(registry_block: str, image: str) -> tuple[tuple[str, str], ...]:
    """An image by digest is its content: its labels never change, so they are read once."""
    return tuple(sorted(image_labels_in_registry(registry_block, image).items()))


def image_facts(target: DeployTarget, block: str, image: str) -> RuntimeFacts | None:
    """The runtime facts CI labelled `image` with; None for an image with no such label."""
    labels = dict(_labels(target.registry_block, image))
    if RUNTIME_LABEL not in labels:
        return None
    try:
        return RuntimeFacts.from_label(labels[RUNTIME_LABEL])
    except ValueError as exc:
        raise DeployTargetInvalid(block=block, field="(image)", detail=f"{image}: {exc}") from None


def service_env(target: DeployTarget, facts: RuntimeFacts) -> EnvFile:
    """The env a service runs with here, secrets read; EnvMissing names what has no value."""
    placement = target.services.get(facts.service)
    try:
        plan = plan_env(
            facts,
            target.environment,
            env=target.env,
            secrets=target.secrets,
            service_env=placement.env if placement else {},
            service_secrets=placement.secrets if placement else {},
        )
    except MissingEnv as exc:
        raise EnvMissing(detail=str(exc), names=exc.names) from None
    return resolve_env(plan)


def accessory_runs(
    target: DeployTarget, service: str | None = None, *, with_env: bool = True
) -> tuple[AccessoryRun, ...]:
    """The target's accessories (those `service` uses), their secrets read `with_env`."""
    return tuple(
        AccessoryRun(
            name=name,
            image=accessory.image,
            env=resolve_env(EnvPlan(plain=accessory.env, secrets=accessory.secrets))
            if with_env
            else EnvFile(),
            data_path=accessory.data_path,
            publish=accessory.publish,
            container_port=accessory.container_port,
            health=tuple(accessory.health),
            health_timeout_s=accessory.health_timeout_s,
        )
        for name, accessory in target.accessories.items()
        if service is None or accessory.used_by_service(service)
    )


def resolve_env(plan: EnvPlan) -> EnvFile:
    values = dict(plan.plain)
    values.update({name: read_secret(name, ref) for name, ref in plan.secrets.items()})
    return EnvFile(values)


def read_secret(name: str, reference: str) -> str:
    """A Secret block's value, or one field of a JSON one; registered for redaction as it is
    loaded (`load_block`)."""
    match = SECRET_REFERENCE.match(reference)
    if match is None:
        raise SecretNotFound(name=name, reference=reference, detail="not a block reference")
    try:
        value = load_block(Secret, match["block"]).get()
    except (ValueError, BlockInvalid) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SecretNotFound(name=name, reference=reference, detail=detail) from None
    if match["field"] is None:
        return value if isinstance(value, str) else json.dumps(value)
    if not isinstance(value, Mapping) or match["field"] not in value:
        detail = f"the secret has no field {match['field']!r}"
        raise SecretNotFound(name=name, reference=reference, detail=detail)
    field = value[match["field"]]
    return field if isinstance(field, str) else json.dumps(field)
