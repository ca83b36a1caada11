"""The first steps of `ci-pipeline` and `nightly`: the repository checked out at its ref, and
the application its spec describes; what either does when it fails, and the work dir removed."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from deliver.planning.notices import NoticeKind
from deliver.spec import PipelineSpec, load_spec
from deliver.tasks.git import Checkout, check_out, repo_name
from deliver.tasks.notify import notify_failure


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


@contextlib.asynccontextmanager
async def checked_out_app(
    repo: str,
    ref: str,
    spec_path: str,
    workdir: Path,
    *,
    notify_block: str | None,
    failure: NoticeKind,
    on_failure: Callable[[PreparedApp], None] = lambda app: None,
) -> AsyncIterator[PreparedApp]:
    """The app checked out into `workdir` for the block. A failure of either is told to
    `notify_block` as `failure` (after `on_failure`, once the app is known) and raised again;
    the work dir goes whatever happened."""
    app: PreparedApp | None = None
    try:
        app = await prepare_app(repo, ref, spec_path, workdir / "src")
        yield app
    except Exception as exc:
        if app is not None:
            on_failure(app)
        service = app.service if app else repo_name(repo)
        notify_failure(notify_block, failure, service=service, ref=ref, error=exc)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
