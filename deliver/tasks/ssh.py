"""SSH to a deploy host: pinned host keys, quoted argument lists, results as data."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import paramiko

from deliver.errors import (
    DeployTargetInvalid,
    HostKeyRejected,
    HostUnreachable,
    RemoteCommandFailed,
)
from deliver.redaction import redact

TAIL = 20


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SshAddress:
    host: str
    port: int
    user: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def load_private_key(text: str, *, block: str) -> paramiko.PKey:
    """The deploy key from its OpenSSH text; a malformed one names the block and field."""
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, IndexError):
            continue
    raise DeployTargetInvalid(
        block=block, field="private_key", detail="not an OpenSSH private key (ed25519, ecdsa, rsa)"
    )


def pinned_host_keys(address: SshAddress, keys: Sequence[str], *, block: str) -> paramiko.HostKeys:
    """A known_hosts table holding exactly the block's keys for this host and port."""
    table = paramiko.HostKeys()
    name = address.host if address.port == 22 else f"[{address.host}]:{address.port}"
    for line in keys:
        parts = line.split()
        if len(parts) < 2:
            raise DeployTargetInvalid(block=block, field="host_keys", detail=f"not a key: {line!r}")
        try:
            key = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
        except (paramiko.SSHException, ValueError, binascii.Error) as exc:
            raise DeployTargetInvalid(block=block, field="host_keys", detail=str(exc)) from exc
        table.add(name, parts[0], key)
    return table


class Remote:
    """One SSH connection to a deploy host; every command is an argument list, quoted here."""

    def __init__(
        self,
        address: SshAddress,
        *,
        private_key: paramiko.PKey,
        host_keys: paramiko.HostKeys,
        attempts: int = 3,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.address = address
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        for hostname, entries in host_keys.items():
            for key_type, key in entries.items():
                self.client.get_host_keys().add(hostname, key_type, key)
        self._connect(private_key, attempts, connect_timeout_s)

    def _connect(self, key: paramiko.PKey, attempts: int, timeout_s: float) -> None:
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                self.client.connect(
                    self.address.host,
                    port=self.address.port,
                    username=self.address.user,
                    pkey=key,
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=timeout_s,
                    banner_timeout=timeout_s,
                    auth_timeout=timeout_s,
                )
                return
            except paramiko.BadHostKeyException as exc:
                raise HostKeyRejected(host=str(self.address), detail="the key changed") from exc
            except paramiko.SSHException as exc:
                if "not found in known_hosts" in str(exc):
                    raise HostKeyRejected(host=str(self.address), detail=str(exc)) from exc
                if isinstance(exc, paramiko.AuthenticationException) or attempt == attempts:
                    raise HostUnreachable(host=str(self.address), detail=str(exc)) from exc
            except OSError as exc:
                if attempt == attempts:
                    raise HostUnreachable(host=str(self.address), detail=str(exc)) from exc
            time.sleep(delay)
            delay *= 2

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout_s: float = 300.0,
    ) -> RemoteResult:
        """Run `argv`, quoted with shlex; a non-zero exit raises RemoteCommandFailed if `check`."""
        command = shlex.join(argv)
        try:
            channel_in, stdout, stderr = self.client.exec_command(command, timeout=timeout_s)
        except (paramiko.SSHException, OSError) as exc:  # no channel: the command never started
            raise HostUnreachable(host=str(self.address), detail=str(exc)) from exc
        if stdin is not None:
            channel_in.write(stdin)
        channel_in.channel.shutdown_write()
        out = redact(stdout.read().decode(errors="replace"))
        err = redact(stderr.read().decode(errors="replace"))
        code = stdout.channel.recv_exit_status()
        command = redact(command)
        result = RemoteResult(command=command, exit_code=code, stdout=out, stderr=err)
        if check and code != 0:
            raise RemoteCommandFailed(
                host=str(self.address), command=command, exit_code=code, stderr=err
            )
        return result

    def write_file(self, path: str, content: bytes) -> None:
        """Replace `path` atomically: write a temporary file beside it, then rename."""
        script = 'umask 077; tmp="$1.tmp.$$"; cat > "$tmp" && mv -f "$tmp" "$1"'
        self.run(["sh", "-c", script, "write_file", path], stdin=content)


class ConnectionPool:
    """Idle connections kept for reuse, so a release's steps don't each pay for a handshake.

    A connection is lent to one borrower at a time and kept only while its transport is up;
    the key must name everything the connection was verified with (address, key, host keys).
    """

    def __init__(self, *, idle_s: float = 30.0) -> None:
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: dict[str, list[tuple[Remote, float]]] = {}

    @staticmethod
    def key(address: SshAddress, private_key: str, host_keys: Sequence[str]) -> str:
        digest = hashlib.sha256("\0".join([private_key, *host_keys]).encode()).hexdigest()
        return f"{address}#{digest}"

    @contextmanager
    def borrow(self, key: str, connect: Callable[[], Remote]) -> Iterator[Remote]:
        remote = self._take(key) or connect()
        try:
            yield remote
        finally:
            if remote.alive:
                with self._lock:
                    self._idle.setdefault(key, []).append((remote, time.monotonic()))
            else:
                remote.close()

    def _take(self, key: str) -> Remote | None:
        now = time.monotonic()
        with self._lock:
            entries = self._idle.get(key, [])
            while entries:
                remote, since = entries.pop()
                if remote.alive and now - since < self._idle_s:
                    return remote
                remote.close()
        return None

    def close_all(self) -> None:
        with self._lock:
            entries = [remote for idle in self._idle.values() for remote, _ in idle]
            self._idle.clear()
        for remote in entries:
            remote.close()
