"""A small parser for Apptainer definition files: header keywords (Bootstrap, From) and %sections.

Enough for the static checks of tests/test_containers.py; not a linter and not a builder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = {
    "setup",
    "files",
    "environment",
    "post",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
    "arguments",
    "app",
}
DIGEST_RE = re.compile(r"^(?P<image>[^@\s]+)@sha256:(?P<digest>[0-9a-f]{64})$")


class DefError(ValueError):
    pass


@dataclass
class Definition:
    header: dict[str, str]
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def base_digest(self) -> str | None:
        match = DIGEST_RE.match(self.header.get("From", ""))
        return match["digest"] if match else None

    def labels(self) -> dict[str, str]:
        out = {}
        for line in self.sections.get("labels", "").splitlines():
            if line.strip():
                key, _, value = line.strip().partition(" ")
                out[key] = value.strip()
        return out

    def files(self) -> list[tuple[str, str]]:
        pairs = []
        for line in self.sections.get("files", "").splitlines():
            parts = line.split()
            if parts:
                pairs.append((parts[0], parts[-1]))
        return pairs


def parse(text: str, name: str = "<def>") -> Definition:
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("%"):
            section = stripped[1:].split()[0]
            if section not in SECTIONS:
                raise DefError(f"{name}:{number}: unknown section %{section}")
            if section in sections:
                raise DefError(f"{name}:{number}: duplicate section %{section}")
            current = section
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif stripped and not stripped.startswith("#"):
            key, sep, value = stripped.partition(":")
            if not sep or not value.strip():
                raise DefError(f"{name}:{number}: expected `Keyword: value` in the header, got {stripped!r}")
            header[key.strip()] = value.strip()
    if header.get("Bootstrap") is None:
        raise DefError(f"{name}: no Bootstrap: header")
    return Definition(header, {k: "\n".join(v).strip("\n") for k, v in sections.items()})


def parse_file(path: str | Path) -> Definition:
    path = Path(path)
    return parse(path.read_text(), str(path))
