"""Errors raised by the delivery system.

DeliveryError
 └── SandboxError           a sandbox component could not be set up, checked or stopped
      ├── MissingSystemPackages   tools are missing and cannot be installed here
      ├── PortInUse               a sandbox port answers for a process the sandbox did not start
      └── ComponentFailed         a component did not become healthy
"""

from __future__ import annotations

from collections.abc import Sequence


class DeliveryError(Exception):
    """Root of every error this project raises on purpose."""


class PrefectNotConfigured(DeliveryError):
    def __init__(self) -> None:
        super().__init__(
            "No Prefect server is configured (PREFECT_API_URL is unset). Point at yours with "
            "`prefect config set PREFECT_API_URL=...`, or pass --sandbox for the local sandbox."
        )


class BlockInvalid(DeliveryError):
    """A block document failed its own validation when loaded; never shows the values."""

    def __init__(self, *, block_type: str, block: str, field: str, detail: str) -> None:
        self.block, self.field, self.detail = block, field, detail
        super().__init__(
            f"{block_type} block {block!r}, field {field!r}: {detail}. Fix it in the UI "
            "(Blocks) or with Block.save(..., overwrite=True)."
        )


class WebhookNotConfigured(DeliveryError):
    def __init__(self, *, block: str) -> None:
        super().__init__(
            f"No Secret block {block!r} holds the webhook secret. Create it in the UI (Blocks, "
            f"Secret) or with Secret(value='...').save({block!r}), then give GitHub the same."
        )


class SandboxError(DeliveryError):
    """A sandbox component could not be set up, checked or stopped."""


class MissingSystemPackages(SandboxError):
    """System tools are missing and this process may not install them."""

    def __init__(self, *, packages: Sequence[str], reason: str) -> None:
        self.packages = tuple(packages)
        command = "apt-get install -y " + " ".join(self.packages)
        super().__init__(
            f"Missing system packages: {', '.join(self.packages)} ({reason}). "
            f"Install them as root with: {command}"
        )


class PortInUse(SandboxError):
    """A port the sandbox needs answers for a process it did not start."""

    def __init__(self, *, component: str, address: str) -> None:
        self.component, self.address = component, address
        super().__init__(
            f"{component}: {address} is already in use by a process this sandbox did not start. "
            f"Stop that process, or point DELIVER_SANDBOX_DIR at the sandbox that owns it."
        )


class ComponentFailed(SandboxError):
    """A component was started but did not become healthy."""

    def __init__(self, *, component: str, detail: str, log_path: str | None = None) -> None:
        self.component, self.detail, self.log_path = component, detail, log_path
        where = f" See its log: {log_path}" if log_path else ""
        super().__init__(f"{component} is not healthy: {detail}.{where}")


class SpecError(DeliveryError):
    """A pipeline spec is malformed."""

    def __init__(self, *, source: str, field: str, problem: str) -> None:
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


class PipelineError(DeliveryError):
    """A CI pipeline step failed; the message names the step's cause."""


class RepoNotFound(PipelineError):
    def __init__(self, *, repo: str, detail: str) -> None:
        self.repo, self.detail = repo, detail
        super().__init__(f"Repository {repo!r} could not be read: {detail or 'no detail'}")


class RefNotFound(PipelineError):
    def __init__(self, *, repo: str, ref: str, branches: list[str]) -> None:
        self.repo, self.ref = repo, ref
        known = f" Branches: {', '.join(branches[:10])}." if branches else ""
        super().__init__(f"No branch, tag or commit {ref!r} in {repo!r}.{known}")


class ChecksFailed(PipelineError):
    def __init__(self, *, failed: list[str], summary: str) -> None:
        self.failed = failed
        super().__init__(f"Check(s) failed: {', '.join(failed)}; nothing was built.\n{summary}")


class CheckFailed(PipelineError):
    """One check exited non-zero; carries its result."""

    def __init__(
        self, *, name: str, exit_code: int, where: str, tail: str, sarif: str = ""
    ) -> None:
        self.name, self.exit_code, self.where, self.tail = name, exit_code, where, tail
        self.sarif = sarif  # the SARIF runs it wrote (JSON), if any
        super().__init__(f"Check {name!r} exited {exit_code} in {where}. Last lines:\n{tail}")


class EnvironmentFailed(PipelineError):
    def __init__(self, *, app_dir: str, detail: str) -> None:
        super().__init__(f"Could not prepare the app's environment for {app_dir}: {detail}")


class ServiceUnhealthy(PipelineError):
    """A service container of a CI run did not pass its health command in time."""

    def __init__(self, *, service: str, image: str, detail: str, logs: str) -> None:
        self.service = service
        super().__init__(
            f"Service {service!r} ({image}) was not healthy: {detail}. Check its image, env and "
            f"health command in deliver.yaml. Its logs (last lines):\n{logs or '(none)'}"
        )


class JobContainerFailed(PipelineError):
    def __init__(self, *, image: str, detail: str) -> None:
        super().__init__(
            f"Could not start the job container from {image}: {detail}. Set "
            "environment.image in deliver.yaml to an image with python3, or make it available."
        )


class BuildFailed(PipelineError):
    def __init__(self, *, context: str, detail: str) -> None:
        self.context, self.detail = context, detail
        super().__init__(f"Image build in {context} failed: {detail}")


class ContainerUnhealthy(PipelineError):
    def __init__(self, *, image: str, url: str, detail: str, logs: str) -> None:
        self.image, self.url, self.logs = image, url, logs
        super().__init__(
            f"Container of {image} never became healthy at {url}: {detail}. "
            f"Container logs (last lines):\n{logs or '(none)'}"
        )


class RegistryError(PipelineError):
    """The registry refused, failed or could not be reached."""


class RegistryUnreachable(RegistryError):
    def __init__(self, *, registry: str, detail: str) -> None:
        self.registry = registry
        super().__init__(f"Registry {registry} could not be reached: {detail}")


class RegistryAuthFailed(RegistryError):
    def __init__(self, *, registry: str, block: str) -> None:
        self.registry, self.block = registry, block
        super().__init__(
            f"Registry {registry} refused the credentials from block {block!r}; "
            "fix the username and password in that block."
        )


class PushFailed(RegistryError):
    def __init__(self, *, reference: str, detail: str, transient: bool) -> None:
        self.reference, self.detail, self.transient = reference, detail, transient
        super().__init__(f"Push of {reference} failed: {detail}")


class ScanFailed(PipelineError):
    def __init__(self, *, image: str, reason: str) -> None:
        self.image, self.reason = image, reason
        super().__init__(f"Scan of {image} failed the policy: {reason}")


class ReleaseError(DeliveryError):
    """A release step failed; the environment keeps serving what it served."""

    rolled_back = False  # set once traffic had moved to the new version and was moved back


class HostKeyRejected(ReleaseError):
    def __init__(self, *, host: str, detail: str) -> None:
        self.host = host
        super().__init__(
            f"{host}: host key not accepted ({detail}); no command was run. "
            "Check the host, then fix the DeployTarget block's 'host_keys'."
        )


class HostUnreachable(ReleaseError):
    def __init__(self, *, host: str, detail: str) -> None:
        self.host = host
        super().__init__(f"{host}: SSH connection failed: {detail}")


class RemoteCommandFailed(ReleaseError):
    """A command ran over SSH but exited non-zero."""

    def __init__(self, *, host: str, command: str, exit_code: int, stderr: str) -> None:
        self.host, self.command, self.exit_code, self.stderr = host, command, exit_code, stderr
        tail = "\n".join(stderr.splitlines()[-10:]) or "(no stderr)"
        super().__init__(f"{command!r} exited {exit_code} on {host}.\nLast stderr lines:\n{tail}")


class DeployTargetInvalid(ReleaseError):
    def __init__(self, *, block: str, field: str, detail: str) -> None:
        self.block, self.field = block, field
        super().__init__(f"DeployTarget block {block!r}, field {field!r}: {detail}")


class HealthCheckFailed(ReleaseError):
    def __init__(self, *, where: str, detail: str) -> None:
        self.where = where
        super().__init__(f"{where} is not healthy: {detail}")


class SmokeCheckFailed(ReleaseError):
    def __init__(self, *, where: str, failures: list[str]) -> None:
        self.where, self.failures = where, failures
        super().__init__(f"Smoke checks failed at {where}: " + "; ".join(failures))


class NotOnStaging(ReleaseError):
    def __init__(self, *, image: str, staging: str, live: str) -> None:
        self.image = image
        super().__init__(
            f"{image} is not live on {staging!r} (live there: {live}); "
            "release it to staging first, then to production (an approval given while it was "
            "live there cannot be used once it is not)."
        )


class NothingToRollBackTo(ReleaseError):
    def __init__(self, *, environment: str, detail: str) -> None:
        self.environment = environment
        super().__init__(f"{environment}: {detail}")


class EnvMissing(ReleaseError):
    """A name the service requires has no value in the environment; no host was touched."""

    def __init__(self, *, detail: str, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(detail)


class SecretNotFound(ReleaseError):
    def __init__(self, *, name: str, reference: str, detail: str) -> None:
        self.name, self.reference = name, reference
        super().__init__(
            f"{name}: the secret {reference!r} could not be read ({detail}); create the Secret "
            "block (Blocks > Secret in the UI), or fix the reference. No host was touched."
        )


class MigrationFailed(ReleaseError):
    def __init__(self, *, where: str, command: str, exit_code: int, tail: str) -> None:
        self.where, self.exit_code, self.tail = where, exit_code, tail
        super().__init__(
            f"The migration {command!r} exited {exit_code} on {where}; nothing was switched and "
            f"the live version keeps serving. Fix the migration and release again.\n"
            f"Last output lines:\n{tail or '(no output)'}"
        )


class AccessoryDown(ReleaseError):
    def __init__(self, *, accessory: str, where: str, detail: str, environment: str) -> None:
        self.accessory = accessory
        super().__init__(
            f"The accessory {accessory!r} on {where} is down ({detail}); a release never "
            f"restarts one. Look at `deliver accessory logs --env {environment} {accessory}`, "
            f"then `deliver accessory boot --env {environment} {accessory}`."
        )
