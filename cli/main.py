"""`nightshift`: the same flows as the DAGs, in-process, for your own data, debugging, replays and tests.

    nightshift import data.csv --timestamp-col ts --label-col y [--task binary|regression] [--label-delay-days N]
    nightshift simulate --start 2026-01-01 --days 44 --rows-per-day 4000 --scenario sudden-covariate --onset 34 --seed 7
    nightshift retrain  --ds 2026-01-14
    nightshift nightly  --start 2026-01-15 --end 2026-02-13
    nightshift score    --ds 2026-01-15 [--model as_of|champion]
    nightshift rollback --ds 2026-02-10 --reason "calibration broke downstream"
    nightshift report   --start 2026-01-15 --end 2026-02-13 [--plot out.png]
    nightshift settings
    nightshift replay-policy --start 2026-01-15 --end 2026-02-13 --set policy.cooldown_days=10 [--retrain-cost-s 600]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from nightshift.choices import InitFrom, ModelSelection, TaskName, WindowKind, values


def _settings(args):
    from nightshift.settings import load_settings

    return load_settings(args.config)


def cmd_simulate(args) -> int:
    from nightshift.lake import Lake
    from simulator.land import simulate

    s = _settings(args)
    if args.task and args.task != s.dataset.task:
        s = s.with_overrides({"dataset.task": args.task})
    summary = simulate(Lake.of(s), s.dataset, start=args.start, days=args.days, rows_per_day=args.rows_per_day,
                       scenario=args.scenario, onset=args.onset, seed=args.seed, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_nightly(args) -> int:
    from batch_scoring.nightly import night_line, run_nights

    s = _settings(args)
    start, end = (args.ds, args.ds) if args.ds else (args.start, args.end)
    if not start or not end:
        raise SystemExit("nightly needs --ds D, or --start D1 --end D2")
    results = run_nights(s, start, end, model=args.model, retrain=not args.no_retrain, progress=not args.quiet)
    if args.quiet:
        for r in results:
            print(night_line(r))
    return 0


def cmd_score(args) -> int:
    from batch_scoring.score import score_partition

    print(json.dumps(score_partition(_settings(args), args.ds, args.model), indent=2))
    return 0


def cmd_retrain(args) -> int:
    from training.retrain import retrain

    s = _settings(args)
    overrides = {"training.init_from": args.init_from, "training.max_steps": args.max_steps,
                 "training.device": args.device, "training.window": args.window}
    s = s.with_overrides({k: v for k, v in overrides.items() if v is not None})
    result = retrain(s, args.ds, trigger="manual", reasons=["requested by hand (CLI)"], progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def cmd_rollback(args) -> int:
    from batch_scoring.score import rescore
    from training.promotion import roll_back

    s = _settings(args)
    result = roll_back(s, args.ds, reason=args.reason, version=args.version)
    if args.rescore_start and args.rescore_end:
        result["rescored"] = rescore(s, args.rescore_start, args.rescore_end)
    print(json.dumps(result, indent=2))
    return 0


def cmd_report(args) -> int:
    from monitoring.report import plot, render, summarize

    summary = summarize(_settings(args), args.start, args.end)
    print(render(summary))
    if args.plot:
        print(f"\nplot: {plot(summary, args.plot)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return 0


def cmd_replay_policy(args) -> int:
    from monitoring.replay import render, replay_policy
    from nightshift.settings import parse_value

    overrides = {}
    for kv in args.set:
        key, _, value = kv.partition("=")
        if not value or not key.startswith("policy."):
            raise ValueError(f"--set takes policy.KEY=VALUE (the replay changes the retrain policy only), got {kv!r}")
        overrides[key] = parse_value(value)
    result = replay_policy(_settings(args).with_overrides(overrides), args.start, args.end,
                           retrain_cost_s=args.retrain_cost_s)
    print(render(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


def cmd_settings(args) -> int:
    from nightshift.settings import config_path

    print(f"# from {config_path(args.config)}, then the environment")
    for key, value in _settings(args).resolved().items():
        print(f"{key} = {value!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `nightshift` parser: every subcommand and flag (the docs' CLI reference is generated from it)."""
    p = argparse.ArgumentParser(prog="nightshift", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="nightshift.toml to use (default: $NIGHTSHIFT_CONFIG or the repo's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("simulate", help="land simulated features and late labels into the lake")
    sp.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    sp.add_argument("--days", type=int, required=True)
    sp.add_argument("--rows-per-day", type=int, default=4000)
    sp.add_argument("--scenario", default="none", help="none, sudden-covariate, gradual-covariate, incremental, "
                                                       "recurrent, seasonal, concept, new-categories; new-class (multiclass only)")
    sp.add_argument("--onset", type=int, default=0, help="the drift's first day, counted from --start (0-based)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--task", choices=values(TaskName), help="the world's target (default: the spec's task)")
    sp.set_defaults(fn=cmd_simulate)

    sp = sub.add_parser("nightly", help="run nights in-process, in date order (retrain hand-off included)")
    sp.add_argument("--ds")
    sp.add_argument("--start")
    sp.add_argument("--end")
    sp.add_argument("--model", choices=values(ModelSelection), help="which champion scores (default: scoring.model)")
    sp.add_argument("--no-retrain", action="store_true", help="decide, but do not run the retrain it asks for")
    sp.set_defaults(fn=cmd_nightly)

    sp = sub.add_parser("score", help="score one day into predictions/ds=D")
    sp.add_argument("--ds", required=True)
    sp.add_argument("--model", choices=values(ModelSelection))
    sp.set_defaults(fn=cmd_score)

    sp = sub.add_parser("retrain", help="train a challenger on day D's window, judge it, promote or reject")
    sp.add_argument("--ds", required=True)
    sp.add_argument("--init-from", choices=values(InitFrom))
    sp.add_argument("--window", choices=values(WindowKind), help="training.window for this retrain")
    sp.add_argument("--max-steps", type=int, help="smoke mode: stop after this many optimizer steps (training.max_steps)")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training.device for this retrain")
    sp.set_defaults(fn=cmd_retrain)

    sp = sub.add_parser("rollback", help="point champion back at an earlier version from the night after D")
    sp.add_argument("--ds", required=True)
    sp.add_argument("--reason", required=True, help="why; recorded with the decision")
    sp.add_argument("--version", help="version to restore (default: previous_champion)")
    sp.add_argument("--rescore-start")
    sp.add_argument("--rescore-end")
    sp.set_defaults(fn=cmd_rollback)

    sp = sub.add_parser("report", help="what happened over a range of nights")
    sp.add_argument("--start", required=True)
    sp.add_argument("--end", required=True)
    sp.add_argument("--plot", help="write a PNG of the realized primary metric per night here")
    sp.add_argument("--json", help="write the full summary as JSON here")
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("replay-policy", help="what another retrain policy would have decided, from the lake's records")
    sp.add_argument("--start", required=True)
    sp.add_argument("--end", required=True)
    sp.add_argument("--set", action="append", default=[], metavar="policy.KEY=VALUE",
                    help="a policy setting to replay with, e.g. --set policy.cooldown_days=10 (repeatable)")
    sp.add_argument("--retrain-cost-s", type=float, help="seconds of training per retrain, for the training time")
    sp.add_argument("--json", help="write the full replay as JSON here")
    sp.set_defaults(fn=cmd_replay_policy)

    sp = sub.add_parser("settings", help="print the resolved settings (and which file they came from)")
    sp.set_defaults(fn=cmd_settings)

    from cli import import_command

    import_command.add_parser(sub).set_defaults(fn=import_command.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # this process's own environment
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # urllib3 logs each of MLflow's retries; the outcome is reported once, by name (exit 4).
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    from nightshift.lake import LakeWriteError
    from nightshift.registry import RegistryError
    from training.promotion import NoChampion

    try:
        return args.fn(args)
    except NoChampion as exc:
        return _fail(args, "no champion", exc, 3)
    except RegistryError as exc:
        return _fail(args, "MLflow", exc, 4)
    except LakeWriteError as exc:
        return _fail(args, "storage", exc, 5)
    except (ValueError, LookupError, FileNotFoundError) as exc:
        return _fail(args, "error", exc, 2)
    except Exception as exc:
        if type(exc).__name__ == "MlflowException":  # one the registry did not name (e.g. while logging a run)
            from nightshift.settings import load_settings

            return _fail(args, "MLflow", f"MLflow at {load_settings(args.config).tracking_uri} failed: {exc}", 4)
        raise
    except BrokenPipeError:  # `nightshift settings | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _fail(args, kind: str, exc: BaseException | str, code: int) -> int:
    """One line on stderr (the message names the problem and what to do), and a non-zero exit code."""
    print(f"nightshift {args.command}: {kind}: {' '.join(str(exc).split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
