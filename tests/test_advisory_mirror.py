"""The sandbox's OSV-compatible advisory mirror answers as the OSV API does."""

import httpx

from deliver.sandbox.advisories_mirror import ADVISORY_DATA
from deliver.sandbox.services.advisory_mirror import answer, load_records

RECORDS = load_records(ADVISORY_DATA)


def query(name: str, version: str) -> dict[str, object]:
    return {"package": {"name": name, "ecosystem": "PyPI"}, "version": version}


def test_shipped_advisories_are_real_published_ids():
    """The mirror ships GitHub advisories for requests, PyYAML and Jinja2."""
    assert set(RECORDS) == {
        "GHSA-x84v-xcm2-53pg",
        "GHSA-j8r2-6x86-q33q",
        "GHSA-8q59-q68h-6hv4",
        "GHSA-h5c8-rqwp-cp95",
    }


def test_query_returns_matching_records_only():
    """requests 2.19.0 matches both requests advisories; 2.31.0 matches none (empty object)."""
    status, body = answer("POST", "/v1/query", query("requests", "2.19.0"), RECORDS)
    assert status == 200
    assert isinstance(body, dict)
    assert {v["id"] for v in body["vulns"]} == {"GHSA-x84v-xcm2-53pg", "GHSA-j8r2-6x86-q33q"}
    assert answer("POST", "/v1/query", query("requests", "2.31.0"), RECORDS) == (200, {})


def test_vulns_by_id_and_unknown_id():
    """GET /v1/vulns/ID returns the record; an unknown id is 404."""
    status, body = answer("GET", "/v1/vulns/GHSA-8q59-q68h-6hv4", None, RECORDS)
    assert status == 200
    assert isinstance(body, dict)
    assert body["database_specific"]["severity"] == "CRITICAL"
    assert answer("GET", "/v1/vulns/GHSA-none", None, RECORDS)[0] == 404


def test_querybatch_lists_ids_per_query():
    """querybatch answers one result per query, with ids only."""
    batch = {"queries": [query("pyyaml", "5.3"), query("jinja2", "3.1.4")]}
    status, body = answer("POST", "/v1/querybatch", batch, RECORDS)
    assert status == 200
    assert isinstance(body, dict)
    assert [[v["id"] for v in r["vulns"]] for r in body["results"]] == [["GHSA-8q59-q68h-6hv4"], []]


def test_sandbox_mirror_serves_over_http(sandbox_state, sandbox_config):
    """The running mirror answers a real OSV query on loopback."""
    response = httpx.post(sandbox_config.advisory_url, json=query("PyYAML", "5.3.1"))
    assert response.status_code == 200
    assert [v["id"] for v in response.json()["vulns"]] == ["GHSA-8q59-q68h-6hv4"]
