"""CI pipeline figures on the sample service, printed as JSON, measured side by side in one run.

    .venv/bin/python -m bench.ci [--repeat N] [--example stock-api|orders-api]

- cold_wall_s: ci-pipeline from call to return on a commit nothing is cached for;
- critical_path_s: the longest chain of that run's own task durations through the flow's graph;
- sequential_baseline_s: what one GitHub Actions job would run for the same result, as a bash
  script: the same checks one after another, bare on the runner in a venv made beforehand
  (as a cached setup-python step would), then docker build, run and probe, export, push
  (under tags of its own: pushing the flow's would make the warm run move them back);
- warm_wall_s: ci-pipeline again on the unchanged commit.
Both the flow and the baseline start with the app's environment prepared (a priming run builds
it), and each cold commit carries a fresh marker file so no check, image or scan is reusable.
Each figure is printed as min / median / max over the rounds. orders-api needs its service
containers, which the script has no equivalent of: it reports cold and warm only.
The sandbox must be up (`deliver sandbox up`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from deliver import commands, sandbox
from deliver.planning.ci import expand_command
from deliver.spec import load_spec

PROJECT_DIR = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT_DIR / "examples"
IMAGE = "bench-ci"
# Not main: a green CI run on main starts a staging release where the CI-to-release triggers
# are deployed, and that release would run on the workers beside the next measured run.
BRANCH = "bench"
# The flow's dependency graph: each step and the steps it waits for. A step's task runs are
# found by name prefix; `find-#2` is the second lookup, made under the build's lock.
GRAPH: dict[str, list[str]] = {
    "checkout": [],
    "find-#1": ["checkout"],
    # A task run only when the app environment has to be built (the lookups of reusable
    # results and environments are not task runs).
    "prepare_app_environment": ["checkout"],
    # The job container and the services start inside the first check that runs (a nested task
    # run), so the checks' durations include them.
    "check-": ["find-#1", "prepare_app_environment"],
    "find-#2": ["check-"],
    "build-": ["find-#2"],
    "test_container": ["build-"],
    "scan_image": ["build-"],
    "push-": ["test_container", "scan_image"],
    "tag-": ["test_container", "scan_image"],
    "publish_result": ["push-", "tag-"],
}
CONFIG = sandbox.config_from_env()
TARGETS = {
    "cold_over_critical_path": "<= 1.10",
    "cold_over_sequential_baseline": "<= 0.70",
    "cold_over_warm": ">= 10",
}
# The SQLite server persists a run's events just after it ends; a run created in that window
# meets "database is locked" (503) and a 2 s client backoff. Runs here start after it settles.
SETTLE_S = 3.0


def git(repo: Path, *args: str) -> str:
    who = {"NAME": "bench", "EMAIL": "bench@example.invalid"}
    env = {
        **os.environ,
        **{f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()},
    }
    done = commands.run(["git", *args], cwd=repo, env=env, timeout_s=60)
    if not done.ok:
        raise SystemExit(f"git {args[0]} failed:\n{done.tail()}")
    return done.stdout.strip()


def make_repo(root: Path, example: str) -> Path:
    repo = root / "repo"
    shutil.copytree(
        EXAMPLES / example, repo, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".*_cache")
    )
    spec = repo / "deliver.yaml"
    spec.write_text(spec.read_text().replace(f"  name: {example}\n", f"  name: {IMAGE}\n"))
    git(repo, "init", "-q", "-b", BRANCH)
    return repo


def fresh_commit(repo: Path) -> str:
    """A commit whose marker changes every check's inputs (pyproject.toml too) and the context."""
    marker = uuid.uuid4()
    # Each package (the app's and its tests'): a check may read only one of them.
    for package in (p for p in repo.iterdir() if (p / "__init__.py").is_file()):
        (package / "_bench_marker.py").write_text(f'MARKER = "{marker}"\n')
    pyproject = repo / "pyproject.toml"
    lines = [line for line in pyproject.read_text().splitlines() if not line.startswith("# bench")]
    pyproject.write_text("\n".join([*lines, f"# bench {marker}"]) + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench")
    return git(repo, "rev-parse", "HEAD")


def run_flow(repo: Path, cache: Path) -> tuple[float, Any]:
    from prefect import State

    from flows.ci import CiParameters, CiResult, ci_pipeline

    parameters = CiParameters(
        repo=str(repo),
        ref=BRANCH,
        spec_path="deliver.yaml",
        advisory_url=CONFIG.advisory_url,
        cache_dir=str(cache),
    )
    time.sleep(SETTLE_S)
    started = time.perf_counter()
    call = cast(Coroutine[Any, Any, State[CiResult]], ci_pipeline(parameters, return_state=True))
    state = asyncio.run(call)
    wall = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"ci-pipeline did not complete: {state.message}")
    return wall, state


def task_durations(state: Any) -> dict[str, float]:
    """Each task run's own duration by name; a name seen again gets `#2`, `#3`... in start order."""
    from deliver.prefect_api import final_task_runs

    timed = sorted(
        (run.start_time, run.end_time, run.name)
        for run in final_task_runs(state.state_details.flow_run_id)
        if run.start_time and run.end_time
    )
    durations: dict[str, float] = {}
    for start, end, task_name in timed:
        name, seen = task_name, 1
        while name in durations:
            seen += 1
            name = f"{task_name}#{seen}"
        durations[name] = round((end - start).total_seconds(), 3)
    return durations


def _step_duration(step: str, durations: dict[str, float]) -> float:
    prefix, _, occurrence = step.partition("#")
    matching = [
        d
        for n, d in durations.items()
        if n.startswith(prefix) and n.partition("#")[2] == ("" if occurrence == "1" else occurrence)
    ]
    return max(matching, default=0.0)


def critical_path(durations: dict[str, float]) -> float:
    """The longest chain of task durations through GRAPH (steps that did not run count 0)."""
    finish: dict[str, float] = {}
    for step, waits_for in GRAPH.items():  # GRAPH lists every step after what it waits for
        start = max((finish[w] for w in waits_for), default=0.0)
        finish[step] = start + _step_duration(step, durations)
    return max(finish.values())


def trusted_environment(cache: Path) -> Path:
    """The app environment the flow last built (its pinned runtime closure is read from it)."""
    envs = sorted((cache / "envs" / "trusted").glob("*/.frozen"), key=lambda p: p.stat().st_mtime)
    return envs[-1].parent


def prime_baseline_env(repo: Path, cache: Path) -> Path:
    """The script's own venv on the runner, with what the job image's environment has."""
    from deliver.planning.environment import install_plan
    from deliver.tasks.app_environment import dependency_files

    spec = load_spec(repo / "deliver.yaml")
    plan = install_plan(dependency_files(repo, spec.environment), spec.environment)
    env_dir = cache / "bench-baseline-env"
    shutil.rmtree(env_dir, ignore_errors=True)
    uv = str(Path(sys.executable).parent / "uv")
    steps = [
        [uv, "venv", "--quiet", "--python", "python3", str(env_dir)],
        [uv, "pip", "install", "--quiet", "--compile-bytecode"]
        + ["--python", str(env_dir / "bin" / "python")]
        + [arg for name in plan.requirement_files for arg in ("-r", str(repo / name))]
        + ["--", *plan.requirements],
    ]
    for step in steps:
        done = commands.run(step, cwd=repo, timeout_s=900)
        if not done.ok:
            raise SystemExit(f"the baseline's venv failed:\n{done.tail()}")
    return env_dir


def baseline_script(repo: Path, work: Path, cache: Path) -> str:
    """The same commands as the flow, in the order a sequential CI job runs them."""
    spec = load_spec(repo / "deliver.yaml")
    env_dir = cache / "bench-baseline-env"
    registry = CONFIG.registry_address
    creds = json.loads((CONFIG.state_dir / "state.json").read_text())["credentials"]["registry"]
    placeholders = {
        "advisory_url": CONFIG.advisory_url,
        "requirements": str(trusted_environment(cache) / "runtime-requirements.txt"),
        "reports": str(work / "reports"),
    }
    checks = [shlex.join(expand_command(c.run, placeholders)) for c in spec.checks]
    short = git(repo, "rev-parse", "--short=7", "HEAD")
    # The flow's image carries these OCI labels; the script's carries the same, the CLI's way.
    labels = {
        "org.opencontainers.image.revision": git(repo, "rev-parse", "HEAD"),
        "org.opencontainers.image.source": str(repo),
        "org.opencontainers.image.created": git(repo, "show", "-s", "--format=%cI", "HEAD"),
        "org.opencontainers.image.version": short,
        "dev.deliver.source-tree": "src-baseline",
    }
    label_flags = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in labels.items())
    ref = f"{registry}/{IMAGE}"
    # Its own tags in the flow's repository (the layers are shared, as the flow's runs share
    # them): pushing the flow's tags would leave the warm run moving them back.
    tag, branch_tag = f"script-{short}", f"script-{BRANCH}"
    port = spec.container.port
    health = (
        "import sys, time, urllib.request\n"
        "for _ in range(300):\n"
        "    try:\n"
        f"        urllib.request.urlopen(sys.argv[1] + {spec.container.health_path!r}, timeout=2)\n"
        "        break\n"
        "    except Exception: time.sleep(0.1)\n"
    )
    return "\n".join(
        [
            "set -euo pipefail",
            f"git clone -q --depth 1 --branch {BRANCH} file://{repo} {work}/src",
            f"cd {work}/src",
            f"mkdir -p {work}/reports",
            f"export PATH={env_dir}/bin:$PATH VIRTUAL_ENV={env_dir} PYTHONDONTWRITEBYTECODE=1",
            f"export MYPY_CACHE_DIR={cache}/mypy-baseline RUFF_CACHE_DIR={cache}/ruff",
            *checks,
            f"docker build -q {label_flags} -t {ref}:{tag} . >/dev/null",
            f"cid=$(docker run -d -p 127.0.0.1::{port} {ref}:{tag})",
            f"hostport=$(docker port $cid {port} | head -1 | cut -d: -f2)",
            f"python3 -c {shlex.quote(health)} http://127.0.0.1:$hostport",
            "docker rm -f $cid >/dev/null",
            f"cid=$(docker create --entrypoint /nonexistent {ref}:{tag})",
            "docker export $cid | tar -xO var/lib/dpkg/status >/dev/null",
            "docker rm $cid >/dev/null",
            f"printf '%s' {shlex.quote(creds['password'])} | DOCKER_CONFIG={work}/docker "
            f"docker login -u {creds['username']} --password-stdin {registry} >/dev/null 2>&1",
            f"docker tag {ref}:{tag} {ref}:{branch_tag}",
            f"DOCKER_CONFIG={work}/docker docker push -q {ref}:{tag} >/dev/null",
            f"DOCKER_CONFIG={work}/docker docker push -q {ref}:{branch_tag} >/dev/null",
        ]
    )


def run_baseline(repo: Path, cache: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as work:
        script = baseline_script(repo, Path(work), cache)
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        done = commands.run(["bash", "-c", script], timeout_s=1800)
        wall = time.perf_counter() - started
    if not done.ok:
        raise SystemExit(f"baseline failed:\n{done.tail(40)}")
    return wall


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="cold/baseline/warm rounds")
    parser.add_argument("--example", default="stock-api", choices=["stock-api", "orders-api"])
    args = parser.parse_args()
    CONFIG.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(CONFIG.prefect_env())
    rounds: dict[str, list[float]] = {"cold": [], "critical": [], "baseline": [], "warm": []}
    tasks: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as root:
        repo = make_repo(Path(root), args.example)
        cache = CONFIG.state_dir / "ci-cache"
        with_baseline = args.example == "stock-api"
        fresh_commit(repo)
        run_flow(repo, cache)  # priming: the app environment and the registry's base layers
        if with_baseline:
            prime_baseline_env(repo, cache)
        for _ in range(args.repeat):
            fresh_commit(repo)
            cold, state = run_flow(repo, cache)
            rounds["cold"].append(cold)
            tasks["cold"] = task_durations(state)
            rounds["critical"].append(critical_path(tasks["cold"]))
            warm, warm_state = run_flow(repo, cache)
            rounds["warm"].append(warm)
            tasks["warm"] = task_durations(warm_state)
            if with_baseline:
                fresh_commit(repo)
                rounds["baseline"].append(run_baseline(repo, cache))
    cold, critical = statistics.median(rounds["cold"]), statistics.median(rounds["critical"])
    warm = statistics.median(rounds["warm"])
    figures: dict[str, Any] = {
        "example": args.example,
        "cold_wall_s": spread(rounds["cold"]),
        "critical_path_s": spread(rounds["critical"]),
        "warm_wall_s": spread(rounds["warm"]),
        "cold_over_critical_path": round(cold / critical, 3),
        "cold_over_warm": round(cold / warm, 1),
    }
    if with_baseline:
        baseline = statistics.median(rounds["baseline"])
        figures["sequential_baseline_s"] = spread(rounds["baseline"])
        figures["cold_over_sequential_baseline"] = round(cold / baseline, 3)
    print(
        json.dumps(
            {
                **figures,
                "targets": TARGETS,
                "rounds": {k: [round(v, 2) for v in vs] for k, vs in rounds.items()},
                "last_round_task_s": tasks,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
