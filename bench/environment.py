"""First CI environment of a service with empty caches: uv against pip, side by side, JSON.

    .venv/bin/python -m bench.environment [--repeat N] [--example stock-api|orders-api]

Each round builds the example's app environment twice in its job image, as CI does (a non-root
user, only the app folder mounted), with nothing cached: once with uv (what `ci-pipeline` runs,
its cache empty) and once with `python -m venv` and pip (`--no-cache-dir`). The sandbox's Docker
engine must be up.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ci import EXAMPLES, spread
from deliver.planning.environment import install_plan
from deliver.spec import load_spec
from deliver.tasks.app_environment import (
    APP_MOUNT,
    CA_MOUNT,
    CONTAINER_TMP,
    MACHINE_CA_BUNDLE,
    build_environment,
    container_user,
    dependency_files,
    job_image,
)
from deliver.tasks.engine import docker_client


def with_pip(app_dir: Path, image: str, requirements: list[str], files: list[str]) -> float:
    script = 'set -e\npython3 -m venv "$HOME/env"\n"$HOME/env/bin/pip" install -q --no-cache-dir '
    script += " ".join(f"-r {APP_MOUNT}/{name}" for name in files)
    script += " -- " + shlex.join(requirements)
    volumes = {str(app_dir): {"bind": APP_MOUNT, "mode": "ro"}}
    env = {"HOME": CONTAINER_TMP, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if MACHINE_CA_BUNDLE.is_file():
        volumes[str(MACHINE_CA_BUNDLE)] = {"bind": CA_MOUNT, "mode": "ro"}
        env["PIP_CERT"] = CA_MOUNT
    started = time.perf_counter()
    with docker_client() as client:
        output = client.containers.run(
            image,
            ["sh", "-c", script],
            remove=True,
            user=container_user(),
            working_dir=APP_MOUNT,
            environment=env,
            volumes=volumes,
        )
    del output
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--example", default="stock-api", choices=["stock-api", "orders-api"])
    args = parser.parse_args()
    app_dir = EXAMPLES / args.example
    spec = load_spec(app_dir / "deliver.yaml")
    plan = install_plan(dependency_files(app_dir, spec.environment), spec.environment)
    image = job_image(app_dir, spec, dict(spec.image.build_args))
    rounds: dict[str, list[float]] = {"uv": [], "pip": []}
    with docker_client() as client:
        image_id = str(client.images.get(image).id)
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-env-") as root:
            started = time.perf_counter()
            build_environment(
                plan, app_dir, image_id, Path(root) / "env", Path(root) / "uv-cache", lambda _: None
            )
            rounds["uv"].append(time.perf_counter() - started)
        rounds["pip"].append(
            with_pip(app_dir, image_id, list(plan.requirements), list(plan.requirement_files))
        )
    result: dict[str, Any] = {
        "example": args.example,
        "image": image,
        "uv_s": spread(rounds["uv"]),
        "pip_s": spread(rounds["pip"]),
        "pip_over_uv": round(statistics.median(rounds["pip"]) / statistics.median(rounds["uv"]), 1),
        "rounds": {k: [round(v, 2) for v in vs] for k, vs in rounds.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
