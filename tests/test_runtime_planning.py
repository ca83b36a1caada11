"""A service's runtime facts, its env for one environment, and the env file. Pure."""

from __future__ import annotations

import pytest

from deliver.errors import SpecError
from deliver.planning.runtime import (
    AccessoryRun,
    ContainerOptions,
    EnvFile,
    MissingEnv,
    RuntimeFacts,
    plan_env,
    secret_reference_problem,
)
from deliver.spec import SmokeCheck, parse_spec

FACTS = RuntimeFacts(service="orders", port=8000, required_env=("DATABASE_URL", "REDIS_URL"))


def test_the_label_round_trips_every_fact():
    facts = RuntimeFacts(
        service="orders",
        port=8000,
        health_path="/healthz",
        health_timeout_s=12.5,
        smoke=(SmokeCheck(path="/stats", json_field="n"),),
        required_env=("A",),
        migrate=("alembic", "upgrade", "head"),
        options=ContainerOptions(memory="512m", cpus=0.5, read_only=True),
    )
    assert RuntimeFacts.from_label(facts.to_label()) == facts


@pytest.mark.parametrize(
    "label", ["", "{}", '{"service": "x"}', "[1]", '{"service":"x","port":"p"}']
)
def test_a_malformed_label_is_a_clear_error(label):
    with pytest.raises(ValueError, match=r"dev\.deliver\.runtime label is malformed"):
        RuntimeFacts.from_label(label)


def test_every_required_name_needs_a_value_and_the_error_names_the_missing_ones():
    with pytest.raises(MissingEnv) as caught:
        plan_env(FACTS, "staging", env={}, secrets={}, service_env={}, service_secrets={})
    assert caught.value.names == ["DATABASE_URL", "REDIS_URL"]
    assert "orders requires DATABASE_URL, REDIS_URL in staging" in str(caught.value)
    assert "Nothing was changed" in str(caught.value)


def test_a_service_overrides_its_environment_plain_over_secret_and_back():
    plan = plan_env(
        FACTS,
        "staging",
        env={"REDIS_URL": "redis://shared", "MODE": "env"},
        secrets={"DATABASE_URL": "db.url", "TOKEN": "token"},
        service_env={"TOKEN": "plain-now"},
        service_secrets={"REDIS_URL": "cache.url"},
    )
    assert plan.plain == {"MODE": "env", "TOKEN": "plain-now"}
    assert plan.secrets == {"DATABASE_URL": "db.url", "REDIS_URL": "cache.url"}


def test_the_env_file_shows_names_never_values_and_refuses_line_breaks():
    env = EnvFile({"B": "two", "A": "one=1"})
    assert env.render() == b"A=one=1\nB=two\n"
    assert "one" not in repr(env)
    assert repr(env) == "EnvFile(A, B)"
    with pytest.raises(ValueError, match="line break"):
        EnvFile({"A": "x\ny"}).render()


@pytest.mark.parametrize(
    ("reference", "ok"),
    [("db", True), ("staging-db.url", True), ("db.", False), ("Db", False), ("a b", False)],
)
def test_secret_references_name_a_block_or_one_of_its_fields(reference, ok):
    assert (secret_reference_problem(reference) is None) is ok


def test_an_accessory_runs_on_the_environment_network_by_its_name_with_a_volume():
    run = AccessoryRun(
        name="postgres",
        image="postgres:15",
        env=EnvFile(),
        data_path="/var/lib/postgresql/data",
        publish=15432,
        container_port=5432,
    )
    args = run.run_arguments("staging", "deliver-staging")
    assert args[args.index("--name") + 1] == "deliver-staging-postgres"
    assert args[args.index("--network-alias") + 1] == "postgres"
    assert "deliver-staging-postgres-data:/var/lib/postgresql/data" in args
    assert "127.0.0.1:15432:5432" in args


def test_the_spec_release_section_is_checked_at_the_edge():
    base = 'service: s\nchecks: [{name: t, run: ["true"]}]\n'
    base += "image: {name: s}\ncontainer: {port: 1}\n"
    spec = parse_spec(base + "release: {env: [DATABASE_URL], migrate: [m]}\n", source="x")
    assert spec.release.env == ["DATABASE_URL"]
    with pytest.raises(SpecError, match=r"release\.env"):
        parse_spec(base + "release: {env: [NOT-A-NAME]}\n", source="x")
    with pytest.raises(SpecError, match=r"release\.options\.memory"):
        parse_spec(base + "release: {options: {memory: lots}}\n", source="x")
