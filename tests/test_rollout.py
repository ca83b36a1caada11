"""The release engine's logic on memory hosts: milliseconds a test, every fault injectable.

What touches a real component (SSH, docker, nginx, HTTP, Prefect) is tested in
test_release.py and test_fleet.py; here are the variants of the logic between them.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from deliver.errors import HealthCheckFailed, HostUnreachable, ReleaseError, SmokeCheckFailed
from deliver.planning.outcome import FinishedRelease
from deliver.planning.release import Approval, Outcome, Release, RunningSlot, Slot
from deliver.rollout import Request, Rollout
from tests.fakes import MemoryHost, MemoryProbes, Registry, environment, image

LOG = logging.getLogger("test-rollout")


class Recorder:
    """The engine's `Reporter`: keeps what it was told."""

    def __init__(self) -> None:
        self.releases: list[FinishedRelease] = []

    def finished(self, release: FinishedRelease) -> None:
        self.releases.append(release)

    @property
    def outcomes(self) -> list[Outcome]:
        return [release.outcome for release in self.releases]


def setup(
    hosts: int = 1, *, nginx: bool = True, max_unavailable: int = 1, keep_versions: int = 3
) -> tuple[Rollout, list[MemoryHost], MemoryProbes, Recorder, Registry]:
    target, memory_hosts, registry = environment(
        hosts, nginx=nginx, max_unavailable=max_unavailable, keep_versions=keep_versions
    )
    probes = MemoryProbes(memory_hosts, front_url=target.front_url)
    recorder = Recorder()
    return (
        Rollout(target, memory_hosts, probes, recorder, LOG),
        memory_hosts,
        probes,
        recorder,
        registry,
    )


def request(n: int, registry: Registry, *, run: str = "run-1", **extra: object) -> Request:
    return Request(
        image=image(n, {"org.opencontainers.image.source": "https://git.example/app"}, registry),
        version=f"1.0.{n}",
        git_sha=f"{n:07x}",
        requested_by="tester",
        run=run,
        **extra,  # type: ignore[arg-type]
    )


def serving(hosts: list[MemoryHost]) -> list[str | None]:
    return [version_of(host.serving()) for host in hosts]


def version_of(release: Release | RunningSlot | None) -> str | None:
    return release.version if release else None


def only_the_live_slot_runs(host: MemoryHost) -> bool:
    live = host.state.live
    return live is not None and list(host.containers) == [live.slot]


def test_first_release_goes_live_in_blue_and_the_next_in_green():
    """Staging-like (no nginx): blue first; the next release green, blue retired at once (no
    nginx moved requests off it, so there is nothing in flight to drain)."""
    rollout, hosts, probes, recorder, registry = setup(nginx=False)
    first = rollout.deploy(request(1, registry))
    assert (first.slot, first.previous) == ("blue", None)
    second = rollout.deploy(request(2, registry, run="run-2"))
    assert (second.slot, second.previous) == ("green", "1.0.1")
    assert list(hosts[0].containers) == [Slot.GREEN]
    assert probes.drained == []
    assert recorder.outcomes == [Outcome.LIVE, Outcome.LIVE]
    assert [r.outcome for r in hosts[0].state.history] == [Outcome.LIVE, Outcome.LIVE]


def test_a_production_release_switches_nginx_to_the_candidate():
    """nginx starts on blue, so a first release goes to green, and the next back to blue."""
    rollout, hosts, probes, _, registry = setup()
    assert rollout.deploy(request(1, registry)).slot == "green"
    assert rollout.deploy(request(2, registry, run="run-2")).slot == "blue"
    assert probes.drained == [0.0]  # the old slot, once nginx moved its requests off
    assert hosts[0].upstream is Slot.BLUE
    assert serving(hosts) == ["1.0.2"]
    assert only_the_live_slot_runs(hosts[0])


def test_images_beyond_keep_versions_are_pruned_and_the_live_one_kept():
    rollout, hosts, _, _, registry = setup(keep_versions=2)
    results = [rollout.deploy(request(n, registry, run=f"run-{n}")) for n in range(1, 5)]
    assert results[2].pruned == (image(1),)
    assert hosts[0].state.kept == (image(4), image(3))
    assert hosts[0].images == {image(3), image(4)}


def test_smoke_failure_behind_nginx_switches_back_and_stops_the_candidate():
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    bad = request(2, registry, run="run-2")
    probes.failing_smoke.add(bad.image)
    with pytest.raises(SmokeCheckFailed) as raised:
        rollout.deploy(bad)
    assert raised.value.rolled_back
    assert serving(hosts) == ["1.0.1"]
    assert only_the_live_slot_runs(hosts[0])
    assert version_of(hosts[0].state.live) == "1.0.1"
    assert hosts[0].state.history[-1].outcome is Outcome.SWITCHED_BACK
    assert recorder.outcomes == [Outcome.LIVE, Outcome.SWITCHED_BACK]
    assert "Smoke checks failed" in recorder.releases[-1].detail


def test_health_failure_never_switches_and_records_failed():
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    bad = request(2, registry, run="run-2")
    probes.unhealthy.add(bad.image)
    with pytest.raises(HealthCheckFailed) as raised:
        rollout.deploy(bad)
    assert not raised.value.rolled_back
    assert hosts[0].faults.calls["switch"] == 1  # the first release's only
    assert recorder.outcomes[-1] is Outcome.FAILED
    assert hosts[0].state.history[-1].outcome is Outcome.FAILED


def test_a_fleet_failing_on_its_second_host_switches_the_first_back():
    """Three hosts, one at a time: web-2's candidate is unhealthy, so web-1 goes back and
    web-3 is never touched; every host records the failure in its own words."""
    rollout, hosts, probes, recorder, registry = setup(3)
    rollout.deploy(request(1, registry))
    bad = request(2, registry, run="run-2")
    probes.unhealthy_on.add(("env@web-2", bad.image))
    with pytest.raises(HealthCheckFailed, match="web-2"):
        rollout.deploy(bad)
    assert serving(hosts) == ["1.0.1"] * 3
    assert [h.faults.calls["switch"] for h in hosts] == [3, 1, 1]  # web-1: there and back
    assert [h.state.history[-1].outcome for h in hosts] == [
        Outcome.SWITCHED_BACK,
        Outcome.FAILED,
        Outcome.FAILED,
    ]
    assert recorder.outcomes[-1] is Outcome.SWITCHED_BACK
    assert all(only_the_live_slot_runs(h) for h in hosts)


def test_batches_switch_max_unavailable_hosts_together():
    rollout, hosts, probes, _, registry = setup(3, max_unavailable=2)
    rollout.deploy(request(1, registry))
    checked = [entry for entry in probes.faults.log if entry.startswith(("health", "smoke"))]
    assert sorted(checked[:2]) == ["health env@web-1", "health env@web-2"]  # batch 1, at once
    assert checked[4] == "health env@web-3"  # batch 2, after batch 1's two smoke checks
    assert serving(hosts) == ["1.0.1"] * 3


@pytest.mark.parametrize(
    "fault",
    [
        TimeoutError("read timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        HostUnreachable(host="deploy@10.0.0.2:22", detail="connection lost"),
        KeyError("surprise"),
    ],
    ids=["paramiko-read-timeout", "lost-api-connection", "lost-ssh", "any-bug"],
)
@pytest.mark.parametrize(
    ("host_index", "operation", "expected"),
    [
        (0, "start_slot", Outcome.FAILED),
        (0, "health", Outcome.FAILED),
        (0, "switch", Outcome.SWITCHED_BACK),  # a switch that failed midway is undone too
        (0, "await_upstream", Outcome.SWITCHED_BACK),
        (0, "smoke", Outcome.SWITCHED_BACK),
        (1, "start_slot", Outcome.SWITCHED_BACK),  # the first host had switched
        (1, "smoke", Outcome.SWITCHED_BACK),
    ],
)
def test_any_exception_undoes_the_release(fault, host_index, operation, expected):
    """Whatever is raised, on either host of two: what switched goes back, every candidate
    stops, each host records it, the report says so, and the error is re-raised as it was."""
    rollout, hosts, probes, recorder, registry = setup(2)
    rollout.deploy(request(1, registry))
    if operation in {"start_slot", "switch"}:
        failing = hosts[host_index].faults
        failing.fail(operation, fault, on_call=failing.calls[operation] + 1)
    else:  # the probes are shared: the first host's check comes first
        probes.fail(operation, fault, on_call=probes.faults.calls[operation] + 1 + host_index)
    with pytest.raises(type(fault)):
        rollout.deploy(request(2, registry, run="run-2"))
    assert serving(hosts) == ["1.0.1", "1.0.1"]
    assert all(only_the_live_slot_runs(host) for host in hosts)
    assert all(version_of(host.state.live) == "1.0.1" for host in hosts)
    assert hosts[0].state.history[-1].outcome is expected
    assert hosts[1].state.history[-1].version == "1.0.2"
    assert recorder.outcomes[-1] is expected
    assert type(fault).__name__ in recorder.releases[-1].detail or isinstance(fault, ReleaseError)


def test_a_failed_switch_back_does_not_keep_the_others_from_going_back():
    """Three hosts switched, the front's smoke fails; switching web-2 back fails too: web-3
    and web-1 still go back, web-2's candidate keeps running (its nginx points at it), and the
    failure is reported."""
    rollout, hosts, probes, recorder, registry = setup(3)
    rollout.deploy(request(1, registry))
    hosts[1].fail("switch", HostUnreachable(host="web-2", detail="gone"), on_call=3)
    probes.fail("smoke", SmokeCheckFailed(where="front", failures=["500"]), on_call=8)
    with pytest.raises(SmokeCheckFailed):
        rollout.deploy(request(2, registry, run="run-2"))
    assert serving(hosts) == ["1.0.1", "1.0.2", "1.0.1"]
    assert [len(h.containers) for h in hosts] == [1, 2, 1]  # web-2's candidate still serves
    assert recorder.outcomes[-1] is Outcome.SWITCHED_BACK
    assert [h.state.history[-1].outcome for h in hosts] == [
        Outcome.SWITCHED_BACK,
        Outcome.FAILED,
        Outcome.SWITCHED_BACK,
    ]


def test_failures_while_undoing_are_each_survived():
    """The candidate cannot be stopped and the failure cannot be recorded: still reported."""
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    bad = request(2, registry, run="run-2")
    probes.unhealthy.add(bad.image)
    hosts[0].fail("stop_slot", HostUnreachable(host="h", detail="gone"))
    hosts[0].fail("write_state", HostUnreachable(host="h", detail="gone"))
    with pytest.raises(HealthCheckFailed):
        rollout.deploy(bad)
    assert recorder.outcomes[-1] is Outcome.FAILED
    assert hosts[0].state.history[-1].outcome is Outcome.LIVE  # the record could not be written


def test_a_host_unreachable_at_survey_reports_the_failure():
    rollout, hosts, _, recorder, registry = setup()
    hosts[0].fail("read_state", HostUnreachable(host="h", detail="refused"))
    with pytest.raises(HostUnreachable):
        rollout.deploy(request(1, registry))
    assert recorder.outcomes == [Outcome.FAILED]
    assert hosts[0].faults.calls["start_slot"] == 0


def test_a_release_killed_after_its_switch_is_reconciled_by_the_next():
    """The record says green serves 1.0.1; a release killed after its switch left nginx on
    blue (1.0.2): the next release records what serves, then goes to green."""
    rollout, hosts, _, _, registry = setup()
    rollout.deploy(request(1, registry))
    killed = request(2, registry, run="killed")
    host = hosts[0]
    host.pull(killed.image)
    host.start_slot(Slot.BLUE, killed.image, killed.version, killed.run)
    host.switch(Slot.BLUE)
    result = rollout.deploy(request(3, registry, run="run-3"))
    assert (result.slot, result.previous) == ("green", "1.0.2")
    outcomes = [r.outcome for r in host.state.history]
    assert outcomes == [Outcome.LIVE, Outcome.RECONCILED, Outcome.LIVE]
    assert only_the_live_slot_runs(host)


def test_prepare_starts_only_the_first_batch_and_deploy_reuses_it():
    rollout, hosts, _, _, registry = setup(3)
    rollout.deploy(request(1, registry))
    offered = request(2, registry, run="run-2")
    rollout.pull_everywhere(offered.image)
    before = rollout.prepare(offered)
    assert before.live is not None
    assert before.live.version == "1.0.1"
    assert [len(h.containers) for h in hosts] == [2, 1, 1]
    starts = hosts[0].faults.calls["start_slot"]
    rollout.deploy(offered)
    assert hosts[0].faults.calls["start_slot"] == starts  # its candidate was reused
    assert serving(hosts) == ["1.0.2"] * 3


def test_withdraw_stops_only_this_runs_candidate():
    rollout, hosts, _, _, registry = setup()
    rollout.deploy(request(1, registry))
    offered = request(2, registry, run="run-2")
    rollout.prepare(offered)
    rollout.withdraw(request(2, registry, run="another-run"))
    assert len(hosts[0].containers) == 2
    rollout.withdraw(offered)
    assert only_the_live_slot_runs(hosts[0])


def test_an_unhealthy_candidate_fails_prepare_and_is_stopped():
    rollout, hosts, probes, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    bad = request(2, registry, run="run-2")
    probes.unhealthy.add(bad.image)
    with pytest.raises(HealthCheckFailed):
        rollout.prepare(bad)
    assert only_the_live_slot_runs(hosts[0])
    assert recorder.outcomes[-1] is Outcome.FAILED


def test_a_rollback_is_recorded_and_reported_as_rolled_back():
    rollout, hosts, _, recorder, registry = setup()
    rollout.deploy(request(1, registry))
    rollout.deploy(request(2, registry, run="run-2"))
    back = request(1, registry, run="run-3", outcome=Outcome.ROLLED_BACK)
    result = rollout.deploy(back)
    assert (result.version, result.previous) == ("1.0.1", "1.0.2")
    assert hosts[0].state.history[-1].outcome is Outcome.ROLLED_BACK
    assert recorder.outcomes[-1] is Outcome.ROLLED_BACK
    assert recorder.releases[-1].previous == ("1.0.2", "0000002")


def test_the_approval_travels_to_the_record_and_the_report():
    rollout, hosts, _, recorder, registry = setup()
    approval = Approval(approver="alice", reason="ship it", at="t")
    rollout.deploy(request(1, registry, approval=approval))
    assert hosts[0].state.history[-1].approval == approval
    assert recorder.releases[-1].approval == approval
    assert recorder.releases[-1].source == "https://git.example/app"


def test_live_release_state_keeps_what_a_rollback_needs():
    rollout, hosts, _, _, registry = setup()
    rollout.deploy(request(1, registry))
    live = hosts[0].state.live
    assert live is not None
    assert live == Release(
        version="1.0.1", image=image(1), git_sha="0000001", slot=Slot.GREEN, since=live.since
    )


def test_the_history_records_what_passed_before_it_went_live():
    """The checks a release ran are in its record: what a production approval is shown."""
    rollout, hosts, _, _, registry = setup(3)
    rollout.deploy(request(1, registry))
    assert hosts[0].state.history[-1].checks == (
        "health /health on 3 host(s)",
        "smoke GET / through http://10.0.0.1:8080, http://10.0.0.2:8080, http://10.0.0.3:8080",
        "smoke GET / through http://10.0.0.100:80",
    )
    staging, staging_hosts, _, _, staging_registry = setup(nginx=False)
    staging.deploy(request(1, staging_registry))
    assert staging_hosts[0].state.history[-1].checks == (
        "health /health on 1 host(s)",
        "smoke GET / through the slot",
    )
