"""Model stage: prepare resources/models/<name> (convert the packaged GGUF, or link hub/local weights)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import menagerie  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import load_resolved_config, run_cli
from menagerie.errors import ConfigError
from menagerie.models import prepare_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--downloads", default="resources/downloads", type=Path)
    args = parser.parse_args(argv)
    models = load_resolved_config(args.config)["models"]
    if args.model not in models:
        raise ConfigError(f"model '{args.model}' is not defined in the config")
    prepare_model(args.model, models[args.model], args.out, args.downloads)


if __name__ == "__main__":
    run_cli(main)
