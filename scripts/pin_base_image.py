"""Re-resolve the `From: <image>:<tag>@sha256:<digest>` of Apptainer .def files to the tag's current digest.

Uses the first of crane, skopeo, docker found on PATH (needs registry access); rewrites the From: line and the
org.menagerie.base-image label. Run `make envs` and rebuild (`make containers`) afterwards.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


def resolve(ref: str) -> str:
    if shutil.which("crane"):
        return subprocess.run(
            ["crane", "digest", ref], capture_output=True, text=True, check=True, timeout=120
        ).stdout.strip()
    if shutil.which("skopeo"):
        out = subprocess.run(
            ["skopeo", "inspect", f"docker://{ref}"], capture_output=True, text=True, check=True, timeout=120
        )
        return json.loads(out.stdout)["Digest"]
    if shutil.which("docker"):
        out = subprocess.run(
            ["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return json.loads(out.stdout)["digest"]
    sys.exit("pin_base_image: none of crane, skopeo, docker is installed; digests cannot be resolved here")


def main(paths: list[str]) -> int:
    for path in map(Path, paths):
        text = path.read_text()
        match = re.search(r"^From:\s*(\S+?)(@sha256:[0-9a-f]{64})?$", text, flags=re.M)
        if not match:
            sys.exit(f"{path}: no From: line")
        tag, old = match.group(1), match.group(2) or ""
        pinned = f"{tag}@{resolve(tag)}"
        text = text.replace(f"{tag}{old}", pinned)
        path.write_text(text)
        print(f"{path}: {pinned}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
