"""The image's labels in one LABEL step: the Dockerfile that says so (pure), and a real build."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

from prefect import flow

from deliver.planning.dockerfile import LABELS_DOCKERFILE, escape_token, ignore_with, with_labels

TRICKY = {"org.opencontainers.image.source": "C:\\repo \"x\" $HOME ${PATH} 'q' `b`", "b": "2"}


def test_labels_are_one_instruction_at_the_end():
    """Every label lands in one LABEL line after the last instruction, sorted by key."""
    written = with_labels("FROM base\nCOPY . /app\n", {"z": "1", "a": "2"})
    assert written == 'FROM base\nCOPY . /app\nLABEL "a"="2" "z"="1"\n'


def test_quotes_dollars_and_escapes_are_escaped():
    """Quotes, `$` and the escape character are escaped, so no value is expanded or cut."""
    written = with_labels("FROM base", {"k": 'a"b$c\\d'})
    assert written == 'FROM base\nLABEL "k"="a\\"b\\$c\\\\d"\n'


def test_an_escape_directive_is_followed():
    """`# escape=`` makes the backtick the escape character; backslashes are then plain."""
    dockerfile = "# escape=`\nFROM base\n"
    assert escape_token(dockerfile) == "`"
    assert with_labels(dockerfile, {"k": 'C:\\x "y"'}) == dockerfile + 'LABEL "k"="C:\\x `"y`""\n'
    assert escape_token("FROM base\n# escape=`\n") == "\\"  # a directive only counts at the top


def test_what_cannot_be_written_safely_is_refused():
    """A value with a line break, or a last line continued, gives None: the builder's labels."""
    assert with_labels("FROM base\n", {"k": "a\nb"}) is None
    assert with_labels("FROM base\nRUN true \\\n", {"k": "v"}) is None


def test_the_labels_dockerfile_is_ignored_by_the_daemon():
    """The made-up .dockerignore names the labels Dockerfile, and itself when there was none."""
    assert ignore_with(None, LABELS_DOCKERFILE) == f".dockerignore\n{LABELS_DOCKERFILE}\n"
    assert ignore_with(".git/\n", LABELS_DOCKERFILE) == f".git/\n{LABELS_DOCKERFILE}\n"


@flow(name="build-only")
def build_only(context: Path, repository: str, labels: dict[str, str], base: str) -> Any:
    from deliver.tasks.docker_image import build_image

    return build_image(context, "Dockerfile", repository, ["t"], {"BASE_IMAGE": base}, labels)


def test_a_real_build_has_every_label_in_one_step_and_nothing_extra_copied(
    docker_engine, base_image, tmp_path, prefect_api
):
    """Labels with quotes, `$` and backslashes arrive exactly, set by one LABEL step, and
    `COPY . /app` takes neither the labels Dockerfile nor a made-up .dockerignore."""
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /app\nCMD ["true"]\n'
    )
    (tmp_path / "hello.txt").write_text("hello\n")
    labels = {**TRICKY, "dev.deliver.run": uuid.uuid4().hex}
    repository = f"test-labels-{uuid.uuid4().hex[:6]}"
    built: Any = build_only(tmp_path, repository, labels, base_image)
    image = docker_engine.images.get(built.image_id)
    try:
        assert {k: image.labels.get(k) for k in labels} == labels
        history = image.history()  # newest first; the base image's own steps last
        added = history[: len(history) - len(docker_engine.images.get(base_image).history())]
        assert sum("LABEL" in layer["CreatedBy"] for layer in added) == 1
        container = docker_engine.containers.create(built.image_id)
        try:
            chunks, _ = container.get_archive("/app")
            with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                copied = {Path(name).name for name in tar.getnames()}
        finally:
            container.remove()
        assert copied == {"app", "Dockerfile", "hello.txt"}
    finally:
        docker_engine.images.remove(image.id, force=True)
