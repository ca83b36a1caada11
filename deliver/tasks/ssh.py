"""SSH to a deploy host: pinned host keys, quoted argument lists, results as data."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import paramiko

from deliver import redaction
from deliver.commands import CommandResult, result_of
from deliver.errors import (
    DeployTargetInvalid,
    HostKeyRejected,
    HostUnreachable,
    RemoteCommandFailed,
)

MAX_READ = 4 * 1024 * 1024  # bytes read of each stream of a remote command
WRITE_FILE = """
umask 077
if [ -L "$1" ]; then echo "$1 is a symbolic link: refusing to write through it" >&2; exit 4; fi
tmp=$(mktemp -- "$1.XXXXXXXXXX") || exit 1
if cat > "$tmp" && mv -f -- "$tmp" "$1"; then exit 0; fi
rm -f -- "$tmp"; exit 1
"""


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
    ) -> CommandResult:
        """Run `argv`, quoted with shlex; a non-zero exit raises RemoteCommandFailed if `check`.
        Past `timeout_s` without output the read gives up: HostUnreachable."""
        started = time.monotonic()
        try:
            channel_in, stdout, stderr = self.client.exec_command(
                shlex.join(argv), timeout=timeout_s
            )
            if stdin is not None:
                try:
                    channel_in.write(stdin)
                except OSError:
                    # A command that refuses at once (a planted symlink) may exit before it
                    # reads its input: its exit status says what happened. A lost connection
                    # is still one.
                    if not self.alive:
                        raise
            channel_in.channel.shutdown_write()
            out = stdout.read(MAX_READ).decode(errors="replace")
            err = stderr.read(MAX_READ).decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        except (paramiko.SSHException, OSError) as exc:  # no channel, or it broke or timed out
            raise HostUnreachable(
                host=str(self.address), detail=str(exc) or type(exc).__name__
            ) from exc
        result = result_of(
            argv,
            where=str(self.address),
            exit_code=code,
            stdout=out,
            stderr=err,
            duration_s=time.monotonic() - started,
        )
        if check and code != 0:
            raise RemoteCommandFailed(
                host=result.where, command=result.command, exit_code=code, stderr=result.stderr
            )
        return result

    def stream(self, argv: Sequence[str], write: Callable[[str], None]) -> int:
        """Run `argv`, passing its output (both streams, redacted) to `write` as it comes, until
        it ends or the caller interrupts; its exit code. For output an operator follows."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(host=str(self.address), detail="the connection is closed")
        channel = transport.open_session()
        redactor = redaction.SECRETS.stream()
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(shlex.join(argv))
            channel.shutdown_write()
            while True:
                if channel.recv_ready():
                    write(redactor.feed(channel.recv(65536).decode(errors="replace")))
                elif channel.exit_status_ready():
                    break
                else:
                    select.select([channel], [], [], 1.0)
            write(redactor.finish())
            return channel.recv_exit_status()
        except (paramiko.SSHException, OSError) as exc:
            raise HostUnreachable(host=str(self.address), detail=str(exc)) from exc
        finally:
            channel.close()

    def write_file(self, path: str, content: bytes) -> None:
        """Replace `path` atomically, readable by the deploy user only: the content goes to a
        temporary file beside it that mktemp creates exclusively under a random name (nothing
        planted there can be written through), then is renamed over it. A symbolic link at
        `path` is refused, not replaced."""
        self.run(["sh", "-c", WRITE_FILE, "write_file", path], stdin=content)


def _collect(channel: paramiko.Channel, *, deadline: float) -> tuple[str, str, int]:
    """Both streams as they come (reading one while the other fills the window would stall the
    command), each kept to MAX_READ bytes, then the exit code; past `deadline`, TimeoutError."""
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(65536)[: max(0, MAX_READ - len(out))]
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)[: max(0, MAX_READ - len(err))]
        drained = not channel.recv_ready() and not channel.recv_stderr_ready()
        if channel.exit_status_ready() and drained:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the command gave no exit status before its deadline")
        select.select([channel], [], [], min(remaining, 1.0))
    decoded = out.decode(errors="replace"), err.decode(errors="replace")
    return decoded[0], decoded[1], channel.recv_exit_status()


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
