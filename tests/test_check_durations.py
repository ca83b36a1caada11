"""How long each check took when it last ran on this worker: what orders the next run's checks."""

from deliver.tasks.reuse import keep_durations, last_durations


def test_durations_are_merged_over_the_last_ones_per_service_and_trust(tmp_path):
    keep_durations(tmp_path, "stock-api", {"tests": 1.8, "lint": 0.4}, untrusted=False)
    keep_durations(tmp_path, "stock-api", {"lint": 0.5}, untrusted=False)
    assert last_durations(tmp_path, "stock-api", untrusted=False) == {"tests": 1.8, "lint": 0.5}
    # A pull request's runs neither read nor write the trusted runs' record.
    assert last_durations(tmp_path, "stock-api", untrusted=True) == {}
    assert last_durations(tmp_path, "orders-api", untrusted=False) == {}


def test_an_unreadable_record_leaves_the_spec_order(tmp_path):
    keep_durations(tmp_path, "stock-api", {"tests": 1.8}, untrusted=False)
    (record,) = (tmp_path / "check-durations" / "trusted").glob("*.json")
    record.write_text("{not json")
    assert last_durations(tmp_path, "stock-api", untrusted=False) == {}
    record.write_text('["a list"]')
    assert last_durations(tmp_path, "stock-api", untrusted=False) == {}
