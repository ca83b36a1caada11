"""A Dockerfile that sets the image's labels in one LABEL instruction. Pure.

The classic builder turns each label given to a build (the SDK's `labels=`, the CLI's `--label`)
into a LABEL step of its own, and each step runs a container: about 60 ms a label here. One
LABEL line at the end of the Dockerfile, which is the final stage, sets them all in one step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LABELS_DOCKERFILE = ".deliver-labels.Dockerfile"
_DIRECTIVE = re.compile(r"^\s*#\s*([A-Za-z]+)\s*=\s*(\S*)\s*$")


def escape_token(dockerfile: str) -> str:
    """The escape character: `\\` unless an `# escape=` parser directive at the top says else."""
    for line in dockerfile.splitlines():
        directive = _DIRECTIVE.match(line)
        if directive is None:
            break
        if directive[1].lower() == "escape":
            return directive[2]
    return "\\"


def _quoted(text: str, escape: str) -> str:
    for special in (escape, '"', "$"):  # the escape character itself first
        text = text.replace(special, escape + special)
    return f'"{text}"'


def with_labels(dockerfile: str, labels: Mapping[str, str]) -> str | None:
    """`dockerfile` ending in one LABEL instruction setting `labels`, or None where that cannot
    be written safely: a label with a line break, or a last line the escape character continues.
    """
    escape = escape_token(dockerfile)
    if escape not in ("\\", "`"):
        return None
    lines = [line.rstrip() for line in dockerfile.splitlines() if line.strip()]
    if lines and lines[-1].endswith(escape):
        return None
    if any(c in text for pair in labels.items() for text in pair for c in "\r\n\0"):
        return None
    words = [f"{_quoted(k, escape)}={_quoted(v, escape)}" for k, v in sorted(labels.items())]
    return dockerfile.rstrip("\n") + "\nLABEL " + " ".join(words) + "\n"


def ignore_with(original: str | None, name: str) -> str:
    """A .dockerignore that also names `name`, so the daemon drops that file from the context
    once it has read it as the Dockerfile (as the docker CLI does with a Dockerfile from outside
    the context); one made up for the build names itself too, so no COPY takes it."""
    if original is None:
        return f".dockerignore\n{name}\n"
    return original.rstrip("\n") + f"\n{name}\n"


_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", re.IGNORECASE)
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _filled(text: str, values: Mapping[str, str]) -> str | None:
    """`text` with its $NAME and ${NAME} replaced, or None when one has no value."""
    names = [match[1] or match[2] for match in _VARIABLE.finditer(text)]
    if any(not values.get(name) for name in names):
        return None
    return _VARIABLE.sub(lambda match: values[match[1] or match[2]], text)


def base_image(dockerfile: str, build_args: Mapping[str, str]) -> str | None:
    """The image the first stage starts from, with the ARGs before it filled in as a build
    with `build_args` would; None when there is no FROM or it cannot be resolved."""
    defaults: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if arg := _ARG.match(line):
            defaults[arg[1]] = (arg[2] or "").strip("\"'")
        elif start := _FROM.match(line):
            values = {**defaults, **{k: v for k, v in build_args.items() if k in defaults}}
            image = _filled(start[1], values)
            return None if image == "scratch" else image
    return None


def declared_args(dockerfile: str) -> set[str]:
    """Every build argument the Dockerfile declares with ARG, in any stage."""
    return {arg[1] for line in dockerfile.splitlines() if (arg := _ARG.match(line))}
