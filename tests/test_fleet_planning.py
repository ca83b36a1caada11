"""Fleet planning and the fleet form of a DeployTarget, without any host."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from blocks.deploy_target import DeployTarget
from deliver.planning.fleet import batches, switch_back_order
from deliver.planning.release import Slot, container_name

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ+fleet"


def host(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "host": "10.0.0.1",
        "slot_ports": {"blue": 8001, "green": 8002},
        "state_dir": "/srv/deliver",
        "nginx_upstream_file": "/etc/nginx/app.conf",
        "front_url": "http://10.0.0.1",
        **extra,
    }


def fleet(**extra: Any) -> dict[str, Any]:
    return {
        "environment": "production",
        "user": "deploy",
        "private_key": "k",
        "app_name": "app",
        "host_keys": [KEY],
        "nginx_command": ["nginx"],
        "hosts": [host("web-1"), host("web-2"), host("web-3")],
        **extra,
    }


def test_batches_keep_order_and_size():
    assert batches(["a", "b", "c"], 1) == [("a",), ("b",), ("c",)]
    assert batches(["a", "b", "c"], 2) == [("a", "b"), ("c",)]
    assert batches(["a", "b", "c"], 5) == [("a", "b", "c")]
    with pytest.raises(ValueError, match="at least 1"):
        batches(["a"], 0)


def test_switch_back_goes_in_reverse():
    assert switch_back_order(["web-1", "web-2"]) == ["web-2", "web-1"]


def test_a_fleet_target_validates():
    target = DeployTarget(**fleet(max_unavailable=2))
    assert [h.name for h in target.hosts] == ["web-1", "web-2", "web-3"]
    assert target.host is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": "10.0.0.9"}, "a fleet names host per host"),
        ({"hosts": [host("web-1"), host("web-1")]}, "its own name"),
        ({"host_keys": []}, "host_keys"),
        ({"nginx_command": None}, "nginx_command"),
        ({"max_unavailable": 0}, "max_unavailable"),
    ],
)
def test_a_bad_fleet_is_refused_naming_the_field(change, message):
    with pytest.raises(ValidationError, match=message):
        DeployTarget(**{**fleet(), **change})


def test_a_single_host_target_still_needs_its_host():
    single = {k: v for k, v in fleet().items() if k != "hosts"}
    with pytest.raises(ValidationError, match="needs host, slot_ports, state_dir"):
        DeployTarget(**single)


def test_a_fleet_hosts_containers_carry_its_name():
    assert container_name("app", "production", Slot.BLUE) == "app-production-blue"
    assert container_name("app", "production", Slot.BLUE, "web-2") == "app-production-web-2-blue"
