"""Reconciling a host's recorded state with what actually serves. Pure."""

from deliver.planning.release import (
    HostState,
    Outcome,
    Release,
    RunningSlot,
    Slot,
    reconcile,
    target_slot,
)

OLD = "reg/app@sha256:" + "1" * 64
NEW = "reg/app@sha256:" + "2" * 64


def state(slot: Slot) -> HostState:
    live = Release(version="1.0", image=OLD, git_sha="abcdef1", slot=slot, since="t0")
    return HostState(live=live, kept=(OLD,), history=())


def test_nginx_serving_the_other_slot_is_adopted():
    """Killed after the switch: nginx serves green, the record says blue: green becomes live."""
    running = [
        RunningSlot(slot=Slot.BLUE, version="1.0", image=OLD),
        RunningSlot(slot=Slot.GREEN, version="2.0", image=NEW),
    ]
    fixed = reconcile(state(Slot.BLUE), running, Slot.GREEN, now="t1")
    assert fixed is not None
    assert fixed.live is not None
    assert (fixed.live.slot, fixed.live.version, fixed.kept[0]) == (Slot.GREEN, "2.0", NEW)
    assert fixed.history[-1].outcome is Outcome.RECONCILED


def test_matching_record_needs_nothing():
    """When the recorded slot is the one serving, nothing changes."""
    running = [RunningSlot(slot=Slot.BLUE, version="1.0", image=OLD)]
    assert reconcile(state(Slot.BLUE), running, Slot.BLUE, now="t1") is None


def test_serving_slot_without_a_container_is_not_adopted():
    """nginx pointing at an empty slot proves nothing about what to adopt."""
    running = [RunningSlot(slot=Slot.BLUE, version="1.0", image=OLD)]
    assert reconcile(state(Slot.BLUE), running, Slot.GREEN, now="t1") is None


def test_without_nginx_the_only_running_slot_wins():
    """Staging: the recorded container is gone and one slot runs: that one is live."""
    running = [RunningSlot(slot=Slot.GREEN, version="2.0", image=NEW)]
    fixed = reconcile(state(Slot.BLUE), running, None, now="t1")
    assert fixed is not None
    assert fixed.live is not None
    assert fixed.live.slot is Slot.GREEN


def test_a_first_release_starts_beside_the_slot_the_front_points_at():
    empty = HostState(live=None, kept=(), history=())
    assert target_slot(empty, serving=Slot.BLUE) is Slot.GREEN
    assert target_slot(empty, serving=Slot.GREEN) is Slot.BLUE
    assert target_slot(empty) is Slot.BLUE
    live = Release(version="1.0", image=OLD, git_sha="abcdef1", slot=Slot.GREEN, since="t0")
    assert target_slot(HostState(live=live, kept=(), history=()), serving=Slot.GREEN) is Slot.BLUE
