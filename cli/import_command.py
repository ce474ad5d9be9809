"""`nightshift import`: land a CSV or Parquet table in the lake and write its dataset spec.

    nightshift import data.csv.gz --timestamp-col event_time --label-col churned --id-col customer_id
    python -m cli.import_command s3://bucket/table.parquet --timestamp-col ts --label-col y --task regression

The work is done by `importer.core` (see its docstring for every rule); this module
parses flags, prints the report and turns a refusal into exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from nightshift.choices import TaskName, values

HELP = "land a CSV/Parquet table (any fsspec URI) in the lake and write its dataset spec"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `import` subcommand to a `nightshift` argparse subparsers object."""
    p = subparsers.add_parser("import", help=HELP, description=HELP + ". Streams the file; nothing is committed "
                              "unless every row passes, and the spec goes into $NIGHTSHIFT_HOME/nightshift.toml.")
    _configure(p)
    return p


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="CSV, gzipped CSV or Parquet: a local path or any fsspec URI")
    p.add_argument("--timestamp-col", required=True, metavar="C", help="the row's time; its UTC date is the row's day")
    p.add_argument("--label-col", required=True, metavar="C", help="the label (ground truth)")
    p.add_argument("--id-col", metavar="C", help="the entity id (default: derived from each row's content)")
    p.add_argument("--task", choices=values(TaskName), help="default: inferred from the label's values")
    arrival = p.add_mutually_exclusive_group()
    arrival.add_argument("--label-delay-days", type=int, metavar="N",
                         help="labels arrive N days after their row's day (default 1)")
    arrival.add_argument("--label-time-col", metavar="C", help="labels arrive on the UTC date of this column")
    p.add_argument("--numeric", type=_columns, default=(), metavar="A,B", help="force these columns to be numeric features")
    p.add_argument("--categorical", type=_columns, default=(), metavar="C,D",
                   help="force these columns to be categorical features")
    p.add_argument("--ignore", type=_columns, default=(), metavar="E,F", help="leave these columns out")
    p.add_argument("--keep-col", type=_columns, default=(), metavar="Y,M", dest="keep_col",
                   help="keep these columns although they only index time (a year, a month...), which import leaves out; "
                        "their drift is reported but does not start a retrain on its own")
    p.add_argument("--timestamp-format", metavar="FMT",
                   help="strptime format of the time columns, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601)")
    p.add_argument("--skip-bad-timestamps", action="store_true",
                   help="drop rows whose timestamp does not parse (counted in the report) instead of failing")
    p.add_argument("--force", action="store_true", help="replace a different dataset spec already in the settings file")
    p.add_argument("--config", metavar="PATH", help="settings file to write (default: $NIGHTSHIFT_HOME/nightshift.toml)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def run(args: argparse.Namespace) -> int:
    """Import, print the report; 0 on success, 2 with `nightshift import: error: ...` on a refusal."""
    from rich.console import Console

    from importer.core import ImportFailed, ImportOptions, import_table, render_report

    console = Console()
    options = ImportOptions(
        source=args.source, timestamp_col=args.timestamp_col, label_col=args.label_col, id_col=args.id_col,
        task=TaskName(args.task) if args.task else None, label_delay_days=args.label_delay_days,
        label_time_col=args.label_time_col, numeric=tuple(args.numeric), categorical=tuple(args.categorical),
        ignore=tuple(args.ignore), keep_cols=tuple(getattr(args, "keep_col", ())), force=args.force, timestamp_format=args.timestamp_format,
        skip_bad_timestamps=args.skip_bad_timestamps, config=args.config, progress=getattr(args, "progress", True),
    )
    try:
        report = import_table(options, console=console)
    except (ImportFailed, ValueError, OSError) as exc:
        print(f"nightshift import: error: {exc}", file=sys.stderr)
        return 2
    render_report(report, console)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nightshift import", description=HELP)
    _configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
