"""Birbal's Natural Instructions sampling (menagerie/data/ni_sampling.py): the base model's few-shot predictions on
the selected NI tasks, then one `source: ni_sampling` dataset's rows drawn by the tasks' scores.

  ni_sample.py predict --config CONFIG.json --dataset NAME --tasks TASKS.jsonl --model DIR
                       --out predictions.jsonl --provenance predictions.provenance.json
  ni_sample.py sample --config CONFIG.json --dataset NAME --tasks TASKS.jsonl --predictions predictions.jsonl
                      --out rows.jsonl --report report.json

CONFIG.json is the fully resolved config the workflow dumps. User errors print `error: ...` and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    import menagerie  # noqa: F401  (normally installed editable)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from menagerie.cli_support import load_resolved_config, run_cli
from menagerie.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="few-shot greedy predictions of the base model on the selected tasks")
    sample = sub.add_parser("sample", help="score, bucket and draw one ni_sampling dataset; write rows and report")
    for p in (predict, sample):
        p.add_argument("--config", required=True)
        p.add_argument("--dataset", required=True)
        p.add_argument("--tasks", required=True, type=Path, help="the natural_instructions dataset's rows (jsonl)")
        p.add_argument("--out", required=True, type=Path)
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--provenance", required=True, type=Path)
    sample.add_argument("--predictions", required=True, type=Path)
    sample.add_argument("--report", required=True, type=Path)
    args = parser.parse_args(argv)

    config = load_resolved_config(args.config)
    entry = config.get("datasets", {}).get(args.dataset)
    if entry is None or entry.get("source") != "ni_sampling":
        raise ConfigError(f"dataset '{args.dataset}' is not a `source: ni_sampling` dataset of the config")
    if args.command == "predict":
        from menagerie.inference.ni_predict import predict as run_predict
        from menagerie.provenance import file_hashes, stage_record

        with stage_record(
            "ni_predict",
            args.provenance,
            dataset=args.dataset,
            model=str(args.model),
            settings=entry["ni"]["inference"],
            selection=entry["ni"]["selection"],
            input_sha256=file_hashes({"tasks": args.tasks}),
        ) as record:
            record.update(run_predict(args.dataset, config, args.tasks, args.model, args.out))
        print(
            f"ni predict {args.dataset}: {record['instances']} instances of {record['tasks']} tasks "
            f"({record['skipped']} skipped) -> {args.out}"
        )
        return
    from menagerie.data.ni_sampling import sample as run_sample
    from menagerie.io import write_json, write_jsonl

    rows, report = run_sample(args.dataset, entry, args.tasks, args.predictions)
    write_jsonl(rows, args.out)
    write_json(report, args.report)
    for warning in report.get("warnings", []):
        print(f"warning: dataset '{args.dataset}': {warning}")
    print(
        f"ni sample {args.dataset}: {report['obtained']} {report['kind']} rows of {report['count']} from "
        f"{len(report['tasks'])} tasks -> {args.out}"
    )


if __name__ == "__main__":
    run_cli(main)
