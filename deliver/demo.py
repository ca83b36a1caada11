"""`make demo`: the main job on the local sandbox.

For now the job is the CI half: the sample service through checks, image build, container test,
scan and push to the sandbox registry, then the same commit again to show that nothing is done
twice. The release flow extends it to staging, approval and production.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deliver import sandbox
from deliver.ci_command import current_ref, run_ci, summary, use_sandbox

PROJECT_DIR = Path(__file__).resolve().parents[1]
SAMPLE_SPEC = "examples/stock-api/deliver.yaml"


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def main() -> int:
    config = sandbox.config_from_env()
    step("Sandbox components")
    statuses = sandbox.status(config)
    for status in statuses:
        health = "healthy" if status.healthy else "UNHEALTHY"
        print(f"  {status.name:<15} {health:<10} {status.address}")
    if not all(status.healthy for status in statuses):
        print("Some components are unhealthy: run `deliver sandbox up`.", file=sys.stderr)
        return 1

    implied = use_sandbox()
    from flows.ci import CiParameters  # after use_sandbox: Prefect reads its settings at import

    parameters = CiParameters(
        repo=str(PROJECT_DIR),
        ref=current_ref(str(PROJECT_DIR)),
        spec_path=SAMPLE_SPEC,
        advisory_url=implied["advisory_url"],
        build_args={"BASE_IMAGE": implied["base_image"]},
        cache_dir=implied["cache_dir"],
    )
    ui = config.prefect_api_url.removesuffix("/api")
    for title in ("CI of the sample service (examples/stock-api)", "The same commit again"):
        step(title)
        state, value = run_ci(parameters)
        link = f"{ui}/runs/flow-run/{state.state_details.flow_run_id}"
        if not state.is_completed():
            print(f"ci-pipeline {state.name}: {value}\n  see {link}", file=sys.stderr)
            return 1
        print(summary(value))
        print(f"  flow run: {link}")
    print(
        f"\nIn the Prefect UI ({ui}): the two ci-pipeline runs (the second shows its checks, "
        "container test and scan as Cached), and under Artifacts: ci-stock-api, "
        "ci-checks-stock-api, scan-stock-api and sbom-stock-api."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
