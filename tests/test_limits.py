"""The build and release locks on the sandbox's Prefect server: a slot taken in the background,
held by the run until its block ends, waited for while another run holds it."""

import contextlib
import uuid

from prefect import flow, get_client

from deliver.tasks.limits import taking


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def delete_limit(name: str) -> None:
    with get_client(sync_client=True) as client, contextlib.suppress(Exception):
        client.delete_global_concurrency_limit_by_name(name)


@flow(name="limits-harness")
def hand_over(name: str) -> list[str]:
    """One lease takes the slot; a second waits for it, gets it once the first ends, and gives
    it back at its own end."""
    seen = []
    with contextlib.ExitStack() as first_block:
        first = first_block.enter_context(taking(name, "the first"))
        seen.append(f"first held: {first.wait(60)}, active {active_slots(name)}")
        with taking(name, "the second") as second:
            seen.append(f"second while the first holds: {second.wait(1.0)}")
            first_block.close()
            seen.append(f"second once the first ended: {second.wait(60)}")
            seen.append(f"active {active_slots(name)}")
    seen.append(f"after both: active {active_slots(name)}")
    return seen


@flow(name="limits-harness")
def give_up_waiting(name: str) -> list[str]:
    """A lease that ends while it still waits takes nothing, and leaves the holder's slot."""
    seen = []
    with taking(name, "the holder") as holder:
        holder.wait(60)
        with taking(name, "a waiter") as waiter:
            seen.append(f"waiter held: {waiter.wait(1.0)}")
        seen.append(f"waiter after its end: {waiter.wait(0)}, active {active_slots(name)}")
    seen.append(f"after the holder: active {active_slots(name)}")
    return seen


def test_a_waiting_lease_gets_the_slot_once_its_holder_ends(prefect_api):
    name = f"test-lock-{uuid.uuid4().hex[:8]}"  # made by its first taker
    try:
        assert hand_over(name) == [
            "first held: True, active 1",
            "second while the first holds: False",
            "second once the first ended: True",
            "active 1",
            "after both: active 0",
        ]
    finally:
        delete_limit(name)


def test_a_lease_ended_while_waiting_takes_nothing(prefect_api):
    name = f"test-lock-{uuid.uuid4().hex[:8]}"
    try:
        assert give_up_waiting(name) == [
            "waiter held: False",
            "waiter after its end: False, active 1",
            "after the holder: active 0",
        ]
    finally:
        delete_limit(name)
