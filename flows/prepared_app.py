"""The first steps of `ci-pipeline` and `nightly`: the repository checked out at its ref, and
the application its spec describes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deliver.spec import PipelineSpec, load_spec
from deliver.tasks.git import Checkout, check_out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PreparedApp:
    checkout: Checkout
    spec: PipelineSpec
    app_dir: Path  # the folder the spec is in: the application's root

    @property
    def service(self) -> str:
        return self.spec.service


async def prepare_app(repo: str, ref: str, spec_path: str, workdir: Path) -> PreparedApp:
    """Check out `ref` into `workdir` and read its spec (checked before anything runs; a
    spec that is not valid fails the run with the file and the field)."""
    checkout = await check_out(repo, ref, workdir)
    spec_file = checkout.workdir / spec_path
    return PreparedApp(checkout=checkout, spec=load_spec(spec_file), app_dir=spec_file.parent)
