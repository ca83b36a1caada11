"""The release engine's migration and accessory steps on memory hosts (milliseconds a test).

The same steps against the sandbox's real hosts are in test_orders_release.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from deliver.errors import AccessoryDown, HealthCheckFailed, MigrationFailed
from deliver.planning.release import Outcome
from deliver.rollout import Rollout
from tests.fakes import MemoryHost, MemoryProbes
from tests.test_rollout import LOG, Recorder, request, serving, setup

MIGRATE = ("alembic", "upgrade", "head")


def with_runtime(
    rollout: Rollout, hosts: list[MemoryHost], probes: MemoryProbes, recorder: Recorder
) -> Rollout:
    target = dataclasses.replace(rollout.target, migrate=MIGRATE, accessories=("postgres",))
    hosts[0].accessories = {"postgres": None}
    return Rollout(target, hosts, probes, recorder, LOG)


def test_the_migration_runs_once_on_the_first_host_before_any_candidate_starts():
    """Fleet of three: one migration, on the first host, logged before the first start."""
    rollout, hosts, probes, recorder, registry = setup(3, max_unavailable=2)
    rollout = with_runtime(rollout, hosts, probes, recorder)
    wanted = request(1, registry)
    result = rollout.deploy(wanted)
    assert [len(h.one_offs) for h in hosts] == [1, 0, 0]
    assert hosts[0].one_offs == [(wanted.image, MIGRATE)]
    log = hosts[0].faults.log
    assert log.index("run_once alembic upgrade head") < log.index("start_slot green 1.0.1")
    assert "migrate" in result.timings_s
    record = hosts[0].state.history[-1]
    assert record.migration == "alembic upgrade head"
    assert record.accessories_booted == ("postgres",)
    assert recorder.releases[-1].migration == "migrated"


def test_a_failed_migration_switches_nothing_and_starts_no_candidate():
    """Exit 1: MigrationFailed with its output; the live version serves on every host."""
    rollout, hosts, probes, recorder, registry = setup(2)
    rollout.deploy(request(1, registry))
    rollout = with_runtime(rollout, hosts, probes, recorder)
    hosts[0].one_off_exit_code = 1
    with pytest.raises(MigrationFailed, match="relation already exists"):
        rollout.deploy(request(2, registry))
    assert serving(hosts) == ["1.0.1", "1.0.1"]
    assert all(h.faults.calls["start_slot"] == 1 for h in hosts)  # the first release's only
    assert [h.state.history[-1].outcome for h in hosts] == [Outcome.FAILED, Outcome.FAILED]
    assert recorder.outcomes[-1] is Outcome.FAILED


def test_an_accessory_that_is_down_fails_before_the_migration():
    """A stopped accessory: AccessoryDown, no migration, nothing started."""
    rollout, hosts, probes, recorder, registry = setup()
    rollout = with_runtime(rollout, hosts, probes, recorder)
    hosts[0].accessories = {"postgres": False}
    with pytest.raises(AccessoryDown, match="postgres"):
        rollout.deploy(request(1, registry))
    assert hosts[0].one_offs == []
    assert hosts[0].containers == {}


def test_a_rollback_runs_no_migration():
    """The schema stays as the last migration left it: a rollback never runs one."""
    rollout, hosts, probes, recorder, registry = setup()
    rollout = with_runtime(rollout, hosts, probes, recorder)
    rollout.deploy(request(1, registry))
    rollout.deploy(request(2, registry))
    back = dataclasses.replace(request(1, registry), outcome=Outcome.ROLLED_BACK)
    rollout.deploy(back)
    assert len(hosts[0].one_offs) == 2
    assert hosts[0].state.history[-1].migration == ""


def test_with_a_migration_production_starts_its_candidate_only_after_approval():
    """prepare pulls and boots accessories but starts nothing (the candidate may need the new
    schema); deploy then migrates, starts, checks and switches."""
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    rollout = with_runtime(rollout, hosts, probes, recorder)
    wanted = request(2, registry, run="run-2")
    rollout.pull_everywhere(wanted.image)
    rollout.prepare(wanted)
    assert len(hosts[0].containers) == 1
    assert hosts[0].one_offs == []
    rollout.deploy(wanted)
    assert serving(hosts) == ["1.0.2"]
    assert len(hosts[0].one_offs) == 1


def test_a_candidate_unhealthy_after_the_migration_leaves_the_live_version_serving():
    """The migration ran, the candidate never got healthy: nothing switched, the failure says so."""
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    rollout = with_runtime(rollout, hosts, probes, recorder)
    bad = request(2, registry)
    probes.unhealthy.add(bad.image)
    with pytest.raises(HealthCheckFailed):
        rollout.deploy(bad)
    assert serving(hosts) == ["1.0.1"]
    assert len(hosts[0].one_offs) == 1
