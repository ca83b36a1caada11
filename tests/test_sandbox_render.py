"""Pure rendering of the sandbox servers' configuration."""

import json
from pathlib import Path

from deliver.planning.release import Slot, nginx_upstreams, serving_slot
from deliver.sandbox.config import SandboxConfig, default_state_dir
from deliver.sandbox.render import (
    known_hosts_line,
    nginx_config,
    registry_config,
    sshd_config,
)


def test_registry_config_requires_htpasswd_on_loopback():
    """The registry listens on loopback only and authenticates with the given htpasswd file."""
    text = registry_config(
        port=5001,
        data_dir=Path("/s/data"),
        htpasswd_path=Path("/s/htpasswd"),
        http_secret="x",  # noqa: S106 (not a credential)
    )
    config = json.loads(text)
    assert config["http"]["addr"] == "127.0.0.1:5001"
    assert config["auth"]["htpasswd"]["path"] == "/s/htpasswd"
    assert config["storage"]["filesystem"]["rootdirectory"] == "/s/data"


def test_sshd_config_allows_keys_only():
    """sshd listens on loopback, uses the given host key, and refuses passwords."""
    text = sshd_config(
        port=2222,
        host_key=Path("/s/host_key"),
        authorized_keys=Path("/s/authorized_keys"),
        pid_file=Path("/s/sshd.pid"),
    )
    lines = set(text.splitlines())
    assert {"Port 2222", "ListenAddress 127.0.0.1", "HostKey /s/host_key"} <= lines
    assert {"PasswordAuthentication no", "KbdInteractiveAuthentication no"} <= lines
    assert "AuthorizedKeysFile /s/authorized_keys" in lines
    assert "SetEnv SHLVL=1" in lines  # commands run without the account's ~/.bashrc


def test_nginx_proxies_to_the_slot_the_marker_names():
    """nginx listens on loopback, includes the slots' groups, and picks one per request by the
    green marker beside the upstream file."""
    text = nginx_config(
        port=8080, prefix=Path("/s"), upstream_file=Path("/s/up.conf"), pid_file=Path("/s/n.pid")
    )
    assert "listen 127.0.0.1:8080;" in text
    assert "include /s/up.conf;" in text
    assert "if (-f /s/up.conf.green) {" in text
    assert "proxy_pass http://production_app_$deliver_slot;" in text


def test_upstream_file_holds_a_group_per_slot():
    """Both slots' groups are in the file; which one serves is the marker's business."""
    text = nginx_upstreams(slot_ports={Slot.BLUE: 8101, Slot.GREEN: 8102})
    assert "upstream production_app_blue {\n    server 127.0.0.1:8101;" in text
    assert "upstream production_app_green {\n    server 127.0.0.1:8102;" in text
    ports = {Slot.BLUE: 8101, Slot.GREEN: 8102}
    assert serving_slot(text, green_marked=False, slot_ports=ports) is Slot.BLUE
    assert serving_slot(text, green_marked=True, slot_ports=ports) is Slot.GREEN
    # An upstream file of one group, from before slot markers, names the slot by its port.
    legacy = "upstream production_app {\n    server 127.0.0.1:8102;\n    keepalive 8;\n}\n"
    assert serving_slot(legacy, green_marked=False, slot_ports=ports) is Slot.GREEN
    assert serving_slot("", green_marked=False, slot_ports=ports) is None


def test_known_hosts_line_brackets_non_default_port():
    """A host on a non-default port is written `[host]:port key`, as OpenSSH expects."""
    line = known_hosts_line(port=2223, public_key="ssh-ed25519 AAAA comment\n")
    assert line == "[127.0.0.1]:2223 ssh-ed25519 AAAA comment\n"


def test_default_ports_do_not_collide():
    """No two sandbox services share a port."""
    ports = SandboxConfig(state_dir=Path("/s")).used_ports()
    assert len(ports) == len(set(ports))


def test_state_dir_from_environment_wins(tmp_path):
    """DELIVER_SANDBOX_DIR overrides the project's .sandbox folder."""
    chosen = default_state_dir({"DELIVER_SANDBOX_DIR": str(tmp_path / "box")}, cwd=tmp_path)
    assert chosen == tmp_path / "box"


def test_state_dir_is_found_above_the_working_directory(tmp_path):
    """From a subfolder of the project, the sandbox is the project's .sandbox."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "prefect.yaml").write_text("")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    assert default_state_dir({}, cwd=tmp_path / "sub" / "deeper") == tmp_path / ".sandbox"
