"""Configuration files of the sandbox's servers, rendered from values. Pure: no I/O."""

from __future__ import annotations

import json
from pathlib import Path

from deliver.planning.release import nginx_slot_routing
from deliver.sandbox.config import LOOPBACK


def registry_config(*, port: int, data_dir: Path, htpasswd_path: Path, http_secret: str) -> str:
    # JSON is valid YAML, and json.dumps quotes every path and secret safely.
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(data_dir)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"{LOOPBACK}:{port}", "secret": http_secret},
        "auth": {"htpasswd": {"realm": "deliver-sandbox", "path": str(htpasswd_path)}},
    }
    return json.dumps(config, indent=2) + "\n"


def sshd_config(*, port: int, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
    lines = [
        f"Port {port}",
        f"ListenAddress {LOOPBACK}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"PidFile {pid_file}",
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "MaxStartups 30:50:100",
        "Subsystem sftp internal-sftp",
        # Debian's bash sources ~/.bashrc for every command sshd runs at shell level 1, and
        # this machine's root .bashrc is a developer's (pyenv init: ~100 processes, 0.15 s a
        # command). A deploy host's commands start at level 2, as under a clean account.
        "SetEnv SHLVL=1",
    ]
    return "\n".join(lines) + "\n"


def _nginx(*, prefix: Path, pid_file: Path, port: int, upstreams: str, proxy: str) -> str:
    """One nginx process serving `port` on loopback: its own health page, the rest proxied with
    the `proxy` directives to the `upstreams` it declares."""
    return f"""\
worker_processes 1;
pid {pid_file};
error_log {prefix}/error.log warn;

events {{
    worker_connections 512;
}}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/scratch/client_body;
    proxy_temp_path {prefix}/scratch/proxy;
    fastcgi_temp_path {prefix}/scratch/fastcgi;
    uwsgi_temp_path {prefix}/scratch/uwsgi;
    scgi_temp_path {prefix}/scratch/scgi;

{upstreams}
    server {{
        listen {LOOPBACK}:{port};

        location = /__front/health {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location / {{
{proxy}            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""


def nginx_config(*, port: int, prefix: Path, upstream_file: Path, pid_file: Path) -> str:
    """nginx in front of production: `upstream_file` holds a group per slot, and the slot
    marker beside it (which releases create or remove) picks one per request."""
    routing = "".join(
        f"            {line}\n" for line in nginx_slot_routing(str(upstream_file)).splitlines()
    )
    proxy = (
        "            # Which slot answered: releases wait for it to name the new slot.\n"
        "            add_header X-Deliver-Upstream $upstream_addr always;\n"
        f"{routing}"
    )
    return _nginx(
        prefix=prefix,
        pid_file=pid_file,
        port=port,
        upstreams=f"    include {upstream_file};\n",
        proxy=proxy,
    )


def nginx_balancer_config(*, port: int, prefix: Path, host_ports: list[int], pid_file: Path) -> str:
    """A load balancer over the fleet hosts' own nginx: round robin, and a request that finds a
    host down tries the next one."""
    servers = "".join(f"        server {LOOPBACK}:{p} max_fails=0;\n" for p in host_ports)
    upstreams = f"    upstream fleet_hosts {{\n{servers}        keepalive 16;\n    }}\n"
    return _nginx(
        prefix=prefix,
        pid_file=pid_file,
        port=port,
        upstreams=upstreams,
        proxy="            proxy_pass http://fleet_hosts;\n",
    )


def known_hosts_line(*, port: int, public_key: str) -> str:
    """A known_hosts entry for a host on loopback at a non-default port (`[host]:port key`)."""
    return f"[{LOOPBACK}]:{port} {public_key.strip()}\n"
