"""Block documents holding the sandbox's generated credentials, saved on its Prefect server."""

from __future__ import annotations

import getpass
import secrets
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deliver.sandbox.approvers import APPROVERS, approver_secret
from deliver.sandbox.chat import ChatInbox
from deliver.sandbox.component import Component, ComponentStatus, Context
from deliver.sandbox.config import LOOPBACK, Environment
from deliver.sandbox.nginx_front import NginxFront
from deliver.sandbox.registry import Registry
from deliver.sandbox.ssh_hosts import SshHost
from deliver.spec import load_spec

WEBHOOK_SECRET_BLOCK = "webhook-secret"  # noqa: S105 (a block name)
REGISTRY_BLOCK = "sandbox-registry"
FLEET_BLOCK = "production-fleet"
QA_BLOCK = "qa"  # a third environment, on staging's host
CHAT_BLOCK = "sandbox-chat"
NOTIFY_BLOCK = f"custom-webhook/{CHAT_BLOCK}"  # how flows' notify_block parameter names it
APPROVAL_POLICY = "production-approvals"
ORDERS_SERVICE = "orders-api"
SAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "stock-api" / "deliver.yaml"


def deploy_target_fields(ctx: Context, environment: Environment) -> dict[str, Any]:
    """A DeployTarget for one of the sandbox's SSH hosts, serving the sample service."""
    paths = SshHost(environment).paths(ctx)
    ports = ctx.config.slot_ports[environment]
    state_dir = ctx.dir("hosts") / environment.value
    state_dir.mkdir(parents=True, exist_ok=True)
    smoke = load_spec(SAMPLE_SPEC).smoke if SAMPLE_SPEC.exists() else []
    fields: dict[str, Any] = {
        "environment": environment.value,
        "host": LOOPBACK,
        "port": ctx.config.ssh_ports[environment],
        "user": getpass.getuser(),
        "private_key": paths["deploy_key"].read_text(),
        "host_keys": [paths["host_key"].with_name("host_key.pub").read_text().strip()],
        "app_name": "stock-api",
        "slot_ports": {slot.value: port for slot, port in ports.items()},
        "smoke_checks": smoke,
        "registry_block": REGISTRY_BLOCK,
        "state_dir": str(state_dir),
        "drain_s": 0.5,
    }
    fields.update(orders_api_fields(ctx, environment, state_dir))
    if environment is Environment.PRODUCTION:
        nginx = NginxFront()
        fields["nginx_upstream_file"] = str(nginx.paths(ctx)["upstream"])
        fields["nginx_command"] = nginx.command(ctx)
        fields["front_url"] = ctx.config.production_front_url
        fields["staging_target"] = Environment.STAGING.value
    return fields


def orders_database_secret(environment: Environment) -> str:
    """The Secret block of an environment's orders-api database: {password, url}."""
    return f"{environment.value}-orders-db"


def orders_api_fields(ctx: Context, environment: Environment, state_dir: Path) -> dict[str, Any]:
    """orders-api beside stock-api on the environment's host: its slots (behind its own nginx in
    production), its env, and the PostgreSQL and Redis accessories it uses."""
    ports = ctx.config.orders_slot_ports[environment]
    placement: dict[str, Any] = {
        "slot_ports": {slot.value: port for slot, port in ports.items()},
        "state_dir": str(state_dir / ORDERS_SERVICE),
        "env": {"REDIS_URL": "redis://redis:6379/0"},
        "secrets": {"DATABASE_URL": f"{orders_database_secret(environment)}.url"},
    }
    if environment is Environment.PRODUCTION:
        nginx = NginxFront(service=ORDERS_SERVICE)
        placement["nginx_upstream_file"] = str(nginx.paths(ctx)["upstream"])
        placement["front_url"] = nginx.address(ctx)
        placement["nginx_command"] = nginx.command(ctx)
    accessories = {
        "postgres": {
            "image": "postgres:15",
            "env": {"POSTGRES_USER": "app", "POSTGRES_DB": "app"},
            "secrets": {"POSTGRES_PASSWORD": f"{orders_database_secret(environment)}.password"},
            "data_path": "/var/lib/postgresql/data",
            "health": ["pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "app"],
            "used_by": [ORDERS_SERVICE],
        },
        "redis": {
            "image": "redis:7",
            "health": ["redis-cli", "ping"],
            "used_by": [ORDERS_SERVICE],
        },
    }
    return {"services": {ORDERS_SERVICE: placement}, "accessories": accessories}


def qa_target_fields(ctx: Context) -> dict[str, Any]:
    """The `qa` environment: staging's SSH host, with its own slots and state."""
    state_dir = ctx.dir("hosts") / QA_BLOCK
    staging = deploy_target_fields(ctx, Environment.STAGING)
    del staging["services"], staging["accessories"]
    return {
        **staging,
        "environment": QA_BLOCK,
        "slot_ports": {slot.value: port for slot, port in ctx.config.qa_slot_ports.items()},
        "state_dir": str(state_dir),
    }


def fleet_target_fields(ctx: Context) -> dict[str, Any]:
    """Production as a fleet: the sandbox's three fleet hosts, each with its own sshd, slots
    and nginx, behind one load balancer. All share the deploy key of the first."""
    fields = deploy_target_fields(ctx, Environment.PRODUCTION)
    for name in ("host", "port", "host_keys", "slot_ports", "state_dir", "nginx_upstream_file"):
        del fields[name]
    del fields["services"], fields["accessories"]
    first = next(iter(ctx.config.fleet))
    fields["private_key"] = SshHost(first).paths(ctx)["deploy_key"].read_text()
    fields["front_url"] = ctx.config.fleet_front_url
    fields["hosts"] = []
    for name, ports in ctx.config.fleet.items():
        state_dir = ctx.dir("hosts") / name
        nginx = NginxFront(fleet_host=name)
        fields["hosts"].append(
            {
                "name": name,
                "host": LOOPBACK,
                "port": ports.ssh,
                "host_keys": [
                    SshHost(name)
                    .paths(ctx)["host_key"]
                    .with_name("host_key.pub")
                    .read_text()
                    .strip()
                ],
                "slot_ports": {"blue": ports.blue, "green": ports.green},
                "state_dir": str(state_dir),
                "nginx_upstream_file": str(nginx.paths(ctx)["upstream"]),
                "nginx_command": nginx.command(ctx),
                "front_url": nginx.address(ctx),
            }
        )
    return fields


class PrefectBlocks(Component):
    name = "prefect-blocks"

    def _settings(self, ctx: Context) -> Any:
        # Prefect only now: the other components' commands never pay for importing it.
        from prefect.settings import (
            PREFECT_API_AUTH_STRING,
            PREFECT_API_URL,
            PREFECT_HOME,
            temporary_settings,
        )

        ctx.config.prefect_home.mkdir(parents=True, exist_ok=True)
        return temporary_settings(
            updates={
                PREFECT_API_URL: ctx.config.prefect_api_url,
                PREFECT_HOME: ctx.config.prefect_home,
                PREFECT_API_AUTH_STRING: ctx.config.prefect_env().get("PREFECT_API_AUTH_STRING"),
            }
        )

    def up(self, ctx: Context) -> ComponentStatus:
        # Prefect only now: the other components' commands never pay for importing it.
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        from prefect.blocks.system import Secret
        from prefect.types import SecretDict
        from prefect_docker.credentials import DockerRegistryCredentials

        from blocks.approval_policy import ApprovalPolicy
        from blocks.deploy_target import DeployTarget
        from deliver.tasks.limits import ensure_release_limit

        username, password = Registry().credentials(ctx)
        with self._settings(ctx):
            DockerRegistryCredentials(
                username=username,
                password=password,
                registry_url=ctx.config.registry_address,
                reauth=False,
            ).save(REGISTRY_BLOCK, overwrite=True)
            for environment in Environment:
                database: Any = self.orders_database(ctx, environment)  # a JSON secret
                Secret(value=database).save(orders_database_secret(environment), overwrite=True)
                DeployTarget(**deploy_target_fields(ctx, environment)).save(
                    environment.value, overwrite=True
                )
            DeployTarget(**fleet_target_fields(ctx)).save(FLEET_BLOCK, overwrite=True)
            DeployTarget(**qa_target_fields(ctx)).save(QA_BLOCK, overwrite=True)
            ApprovalPolicy(
                approvers=list(APPROVERS),
                totp_secrets={
                    name: SecretStr(approver_secret(ctx.state, name)) for name in APPROVERS
                },
                emergency_rollback=["alice"],
            ).save(APPROVAL_POLICY, overwrite=True)
            secret = SecretStr(self.webhook_secret(ctx))
            Secret(value=secret).save(WEBHOOK_SECRET_BLOCK, overwrite=True)
            CustomWebhookNotificationBlock(
                name="sandbox chat",
                url=f"http://{LOOPBACK}:{ctx.config.chat_port}/hooks/{{{{token}}}}",
                json_data={"text": "*{{subject}}*\n{{body}}"},  # Slack's incoming-webhook body
                secrets=SecretDict({"token": ChatInbox().token(ctx)}),
                headers=None,
                cookies=None,
            ).save(CHAT_BLOCK, overwrite=True)
            for environment_name in (*(e.value for e in Environment), QA_BLOCK):
                ensure_release_limit(environment_name)
        ctx.say(
            f"{self.name}: saved {REGISTRY_BLOCK!r}, DeployTargets 'staging', 'production', "
            f"{FLEET_BLOCK!r}, {QA_BLOCK!r}, "
            f"{APPROVAL_POLICY!r}, {WEBHOOK_SECRET_BLOCK!r} and {NOTIFY_BLOCK!r}"
        )
        return self.status(ctx)

    def webhook_secret(self, ctx: Context) -> str:
        """What `deliver webhook serve --sandbox` checks deliveries' signatures against."""
        found = ctx.state.credentials("webhook")
        if not found:
            found = {"secret": secrets.token_urlsafe(32)}
            ctx.state.set_credentials("webhook", found)
        return found["secret"]

    def orders_database(self, ctx: Context, environment: Environment) -> dict[str, str]:
        """orders-api's database password in one environment, and the URL it connects with
        (the postgres accessory by its name on the environment's network)."""
        key = f"orders-db-{environment.value}"
        found = ctx.state.credentials(key)
        if not found:
            found = {"password": secrets.token_urlsafe(24)}
            ctx.state.set_credentials(key, found)
        password = found["password"]
        url = f"postgresql+psycopg://app:{password}@postgres:5432/app"
        return {"password": password, "url": url}

    def status(self, ctx: Context) -> ComponentStatus:
        # Prefect only now: the other components' commands never pay for importing it.
        from prefect_docker.credentials import DockerRegistryCredentials

        from blocks.deploy_target import DeployTarget

        address = (
            f"DockerRegistryCredentials/{REGISTRY_BLOCK}, "
            f"DeployTarget/staging, production, {FLEET_BLOCK}, {QA_BLOCK}"
        )
        try:
            with self._settings(ctx):
                block = DockerRegistryCredentials.load(REGISTRY_BLOCK)
                for name in [*(e.value for e in Environment), FLEET_BLOCK, QA_BLOCK]:
                    DeployTarget.load(name)
        except Exception as exc:
            detail = f"cannot load: {type(exc).__name__}: {exc}".splitlines()[0][:200]
            return ComponentStatus(name=self.name, address=address, healthy=False, detail=detail)
        current = block.registry_url == ctx.config.registry_address
        detail = "saved" if current else f"points at {block.registry_url}, not this sandbox"
        return ComponentStatus(name=self.name, address=address, healthy=current, detail=detail)
