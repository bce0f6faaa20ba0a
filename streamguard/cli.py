"""The ``streamguard`` command: parse flags and environment, build the pipeline, run it.

This is the only module that chooses a backend. Every user-facing error is a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from streamguard import __version__

log = logging.getLogger("streamguard")


class UsageError(Exception):
    """An error the user can fix; printed as one line."""


def _env(name: str, default: str | None = None) -> str | None:
    """A ``STREAMGUARD_<NAME>`` variable that is not a setting (``config.PROCESS_ENV``)."""
    return os.environ.get(f"STREAMGUARD_{name}", default)


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    from streamguard.config import BACKENDS, flag_help

    parser.add_argument("--config", default=_env("CONFIG"), help="TOML settings file (env STREAMGUARD_CONFIG)")
    parser.add_argument("--backend", default=None, choices=list(BACKENDS), help=flag_help("runtime", "backend"))
    parser.add_argument("--codebook", default=None, help=flag_help("runtime", "codebook"))
    parser.add_argument("--save-codebook", default=None, help="write the fitted codebook to this .npz")


def _flag_help(section: str, name: str, extra: str = "") -> str:
    from streamguard.config import flag_help

    return flag_help(section, name, extra)


def _add_metrics_flags(parser: argparse.ArgumentParser, linger: bool) -> None:
    """--metrics-port/--metrics-addr/--pace/--linger of the batch commands (demo, replay)."""
    group = parser.add_argument_group(
        "metrics",
        "Prometheus exposition, as `streamguard run` serves it: the same streamguard_* series "
        "(no consumer lag without Kafka; alert delay measured on the stream's event time).",
    )
    group.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port while the command runs (0: any free port)",
    )
    group.add_argument("--metrics-addr", default=None, metavar="ADDR", help=_flag_help("metrics", "addr"))
    group.add_argument(
        "--pace", type=float, default=None, metavar="EVENTS_PER_S",
        help="feed the detector at most this many requests per second of wall time, like a live stream "
        "(default: as fast as possible); useful with --metrics-port so a scraper sees the series move",
    )
    if linger:
        group.add_argument(
            "--linger", type=float, default=0.0, metavar="SECONDS",
            help="with --metrics-port: keep serving /metrics this long after the work is done, "
            "so a scraper collects the final values (SIGTERM or Ctrl-C ends it early)",
        )


def _check_metrics_flags(args: argparse.Namespace) -> None:
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be in 0..65535, got {args.metrics_port}")
    if args.pace is not None and not args.pace > 0:
        raise UsageError(f"--pace must be > 0 requests per second, got {args.pace}")
    if getattr(args, "linger", 0.0) < 0:
        raise UsageError(f"--linger must be >= 0 seconds, got {args.linger}")
    if getattr(args, "linger", 0.0) > 0 and args.metrics_port is None:
        raise UsageError("--linger needs --metrics-port")


def _endpoint(args: argparse.Namespace, backend, default_key: bytes | None = None):
    """The metrics endpoint of a batch command, or None without --metrics-port."""
    if args.metrics_port is None:
        return None
    from streamguard.endpoint import Endpoint

    try:
        endpoint = Endpoint(args.metrics_port, args.metrics_addr, backend, default_key=default_key)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc}") from None
    print(f"serving metrics on {endpoint.url} (also /healthz, /readyz)", flush=True)
    return endpoint


SHARED_FLAG_HELP = {
    "--seed": "random seed: the same seed, the same simulated traffic (default %(default)s)",
    "--scale": "size of the simulated population relative to the default world "
    "(1: ~1,800 accounts, ~190k requests over 3 days; default %(default)s)",
    "--dim": "embedding dimension of the simulated requests (default %(default)s)",
}
"""Help of the flags several commands share, written once; a command's own help text wins."""


def _describe_shared_flags(sub: argparse._SubParsersAction) -> None:
    """Give --seed/--scale/--dim of every subcommand (this module's and the ones registered by others) a help text."""
    for command in sub.choices.values():
        for action in command._actions:
            shared = [SHARED_FLAG_HELP[o] for o in action.option_strings if o in SHARED_FLAG_HELP]
            if shared and not action.help:
                action.help = shared[0]


class _StoreGiven(argparse.Action):
    """Store the value and note that the flag was given, as ``<dest>_given``."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamguard", description="Detect model-distillation traffic in an LLM API request stream.")
    parser.add_argument("--version", action="version", version=f"streamguard {__version__}")
    parser.add_argument("--log-level", default=None, help=_flag_help("runtime", "log_level"))
    sub = parser.add_subparsers(dest="command", required=True)

    about = "simulated traffic with planted distillers, full pipeline, live table, eval summary"
    demo = sub.add_parser(
        "demo", help=about,
        description=f"{about[0].upper()}{about[1:]}: everything in memory, no broker or files needed (~1 min on 2 cores).",
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--scale", type=float, default=1.0)
    demo.add_argument("--dim", type=int, default=384)
    demo.add_argument(
        "--no-live", action="store_true",
        help="no live table: progress lines on stderr, the latest alerts printed once at the end "
        "(for logs and CI; also what happens when stdout is not a terminal)",
    )
    _add_metrics_flags(demo, linger=True)
    _add_settings_flags(demo)

    sim = sub.add_parser(
        "simulate", help="write labelled traffic",
        description="Write simulated request records (Parquet) and their labels (JSON): ordinary accounts and planted distillers.",
    )
    sim.add_argument("--out", required=True, help="Parquet file of request records")
    sim.add_argument("--labels", required=True, help="labels JSON")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--scale", type=float, default=1.0)
    sim.add_argument("--dim", type=int, default=384)
    sim.add_argument(
        "--days", type=float, default=3.0, action=_StoreGiven,
        help="length of the period (default 3; with --sample-world the world draws it, 4 hours to 5 days, unless given)",
    )
    sim.set_defaults(days_given=False)
    sim.add_argument(
        "--sample-world",
        action="store_true",
        help="let the seed also draw the world's family: geometry, mix and volumes of account kinds, "
        "template strength, span and population size (x0.15-12 on top of --scale); "
        "the drawn parameters go into the labels under \"world\"",
    )
    sim.add_argument(
        "--evasion",
        action="append",
        default=[],
        metavar="SCENARIO",
        help="plant an evasion scenario's distillers too (repeatable; 'all' for every one): "
        "paraphrased, mixed_into_product, round_robin, slow_10x, population_mix",
    )
    sim.add_argument(
        "--traps",
        action="store_true",
        help="add benign traps that look like campaigns (enterprise orgs, joint benchmarks, time-zone cohorts, "
        "resellers, agent-framework users) and write the request 'attributes' column (net, pay, client); with "
        "--real-text the traps are written as prompts, without the attributes column",
    )
    sim.add_argument(
        "--real-text",
        action="store_true",
        help="write the prompts as text and embed them with the all-MiniLM-L6-v2 sentence model "
        "(D=384; needs the 'text' extra; ~21-24k requests at scale 1; embeddings cached on disk)",
    )
    sim.add_argument(
        "--embed-cache", default=_env("EMBED_CACHE"), metavar="DIR",
        help="with --real-text: embedding cache folder (env STREAMGUARD_EMBED_CACHE; default ~/.cache/streamguard/embeddings)",
    )
    sim.add_argument(
        "--embed-threads", type=int, default=_env("EMBED_THREADS"), metavar="N",
        help="with --real-text: torch threads for embedding (env STREAMGUARD_EMBED_THREADS; default all cores)",
    )
    sim.add_argument(
        "--texts", default=None, metavar="F.parquet",
        help="with --real-text: also write each request's prompt text and ground truth here (not part of the contract)",
    )
    sim.add_argument("--to", default=None, help="also publish to kafka://host:port/topic")
    sim.add_argument("--to-format", choices=["arrow", "json"], default="arrow", help="Kafka record format for --to")
    sim.add_argument("--partitions", type=int, default=None, help="with --to: create the topic with this many partitions")

    about = "the whole detector over a request file, in event-time order"
    rep = sub.add_parser("replay", help=about, description=f"Run {about}; alerts to JSON Lines.")
    rep.add_argument("file", help="Parquet or Arrow IPC request records")
    rep.add_argument("--alerts", required=True, help="alerts JSON Lines output")
    rep.add_argument("--dead-letters", default=None, help="dead letters JSON Lines (default: ALERTS.dead.jsonl)")
    rep.add_argument("--partitions", type=int, default=1, help="shard accounts as Kafka's default partitioner would")
    rep.add_argument(
        "--alert-account-hash",
        action="store_true",
        default=None,
        help=_flag_help("runtime", "alert_account_hash", ", as `run` does with the same flag"),
    )
    _add_metrics_flags(rep, linger=True)
    _add_settings_flags(rep)

    about = "precision, recall, false positives and delay of alerts against labels"
    ev = sub.add_parser("eval", help=about, description=f"Print {about}.")
    ev.add_argument(
        "--labels", required=True,
        help="labels JSON: streamguard simulate's, or the independent worlds' ({account_id: {label, kind, campaign, events}})",
    )
    ev.add_argument("--alerts", required=True, help="alerts JSON Lines (streamguard replay's or run's output)")
    ev.add_argument("--traffic", default=None, help="the request file the alerts came from (adds delays)")
    ev.add_argument("--json", default=None, help="also write the evaluation as JSON here")

    from streamguard import bench, evaluate_matrix, evasion_table  # noqa: PLC0415 - their heavy imports stay inside their commands
    from streamguard.service import command as run_command  # noqa: PLC0415

    bench.add_parser(sub)
    run_command.add_parser(sub)
    about = "every setting: its section.field, STREAMGUARD_<SECTION>_<FIELD> variable, flag, default and meaning"
    lst = sub.add_parser("settings", help=about, description=f"List {about}, generated from streamguard/config/.")
    lst.add_argument("--json", action="store_true", help="one JSON object per setting instead of the text table")
    _add_settings_flags(evasion_table.add_parser(sub))
    evaluate_matrix.add_parser(sub)
    _describe_shared_flags(sub)
    return parser


def _settings(args: argparse.Namespace):
    """Defaults < TOML (--config) < STREAMGUARD_* variables < this command's flags; the flags get the resolved values."""
    from streamguard.config import flag_overrides, load_settings, settle_flags

    try:
        settings = load_settings(args.config, overrides=flag_overrides(args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settle_flags(args, settings)
    logging.getLogger().setLevel(settings.runtime.log_level.upper())
    return settings


def _backend(args: argparse.Namespace, settings):
    from streamguard.backends import BackendUnavailable, create_backend

    try:
        backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    except BackendUnavailable as exc:
        raise UsageError(str(exc)) from None
    log.info("backend: %s", backend.name)
    return backend


def _codebook(args: argparse.Namespace):
    if not args.codebook:
        return None
    from streamguard.detectors.codebook import Codebook

    try:
        return Codebook.load(args.codebook)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _simulate_real_text(args: argparse.Namespace):
    """The --real-text branch of `simulate`: written prompts, real sentence embeddings."""
    from streamguard.sim.realtext import RealTextConfig, simulate_realtext
    from streamguard.sim.text_embedding import EMBED_DIM, CachedEmbedder, ModelUnavailable

    if args.evasion:
        raise UsageError("--evasion is not available with --real-text")
    if args.dim != EMBED_DIM:
        raise UsageError(f"--real-text embeds with all-MiniLM-L6-v2, whose dimension is {EMBED_DIM}; drop --dim {args.dim}")
    if args.embed_threads is not None and args.embed_threads < 1:
        raise UsageError(f"--embed-threads must be >= 1, got {args.embed_threads}")
    try:
        config = RealTextConfig(seed=args.seed, scale=args.scale, days=args.days, traps=args.traps)
        embedder = CachedEmbedder(cache_dir=args.embed_cache, threads=args.embed_threads)
        traffic = simulate_realtext(config, embedder)
    except ModelUnavailable as exc:
        raise UsageError(str(exc)) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(
        f"embedded {traffic.embedded} new prompts in {traffic.embed_seconds:.1f} s "
        f"({traffic.cached} from the cache in {embedder.cache.folder})",
        flush=True,
    )
    return traffic


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamguard.sim import SimConfig, simulate, write_traffic

    if args.texts and not args.real_text:
        raise UsageError("--texts needs --real-text")
    if args.sample_world and args.real_text:
        raise UsageError("--sample-world is not available with --real-text")
    if args.real_text:
        traffic = _simulate_real_text(args)
    else:
        try:
            from streamguard.sim import KNOWN_EVASIONS

            evasion = sorted(KNOWN_EVASIONS) if "all" in args.evasion else args.evasion
            days = args.days if args.days_given or not args.sample_world else None
            config = SimConfig(
                seed=args.seed, scale=args.scale, dim=args.dim, days=days, evasion=tuple(evasion), sample_world=args.sample_world,
                traps=args.traps,
            )
            traffic = simulate(config)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    write_traffic(traffic, args.out, args.labels)
    if args.texts:
        from streamguard.sim.realtext import write_prompt_texts

        write_prompt_texts(traffic, args.texts)
    if args.to:
        from streamguard.stream.kafka import publish_table  # noqa: PLC0415 - kafka only when asked

        try:
            publish_table(traffic.table, args.to, fmt=args.to_format, partitions=args.partitions)
        except Exception as exc:  # the broker's errors are many; the user needs one line
            raise UsageError(f"cannot publish to {args.to}: {exc}") from None
    accounts = traffic.labels["accounts"]
    distillers = sum(1 for a in accounts.values() if a["label"] == "distiller")
    print(f"wrote {traffic.table.num_rows} requests from {len(accounts)} accounts ({distillers} distillers) to {args.out}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamguard.schema import RecordFileError, RequestFile
    from streamguard.sinks.alert_file import AlertFile
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.replay import EventTimeOrderError, ReplayHooks, replay_file

    from streamguard.pseudonyms import account_hasher, hmac_key_from_env

    settings = _settings(args)
    if args.partitions < 1:
        raise UsageError("--partitions must be >= 1")
    _check_metrics_flags(args)
    key, stable = hmac_key_from_env()
    if args.alert_account_hash and not stable:
        raise UsageError("--alert-account-hash needs STREAMGUARD_HMAC_KEY")
    try:
        RequestFile(args.file)  # a wrong file is one line before anything starts; replay_file reads it in batches
    except RecordFileError as exc:
        raise UsageError(str(exc)) from None
    backend = _backend(args, settings)
    endpoint = _endpoint(args, backend)
    metrics = endpoint.metrics if endpoint is not None else None
    alert_hash = None
    if args.alert_account_hash:
        alert_hash = metrics.account_hash if metrics is not None else account_hasher(key)
    dead_path = args.dead_letters or str(Path(args.alerts).with_suffix("")) + ".dead.jsonl"
    alerts = AlertFile(args.alerts, fresh=True)
    dead = DeadLetterSink(dead_path)
    try:
        if metrics is not None:
            metrics.ready(True)
        hooks = ReplayHooks(
            metrics=metrics, pace=args.pace, alert_hash=alert_hash,
            kernel_timer=endpoint.kernel_timer if endpoint is not None else None,
        )
        result = replay_file(
            args.file, settings, backend, alerts, dead, partitions=args.partitions, codebook=_codebook(args), hooks=hooks
        )
        if metrics is not None:
            metrics.ready(False)
    except (RecordFileError, EventTimeOrderError) as exc:
        if endpoint is not None:
            endpoint.close()
        raise UsageError(str(exc)) from None
    finally:
        alerts.close()
        dead.close()
    if args.save_codebook and result.pipelines and result.pipelines[0].codebook is not None:
        result.pipelines[0].codebook.save(args.save_codebook)
    print(
        f"replayed {result.requests} requests ({result.dead_letters} dead letters -> {dead_path}) "
        f"in {result.seconds:.1f} s, {result.events_per_second:,.0f} events/s on {backend.name}; "
        f"{result.alerts} alerts -> {args.alerts}",
        flush=True,
    )
    if endpoint is not None:
        if args.linger > 0:
            print(f"still serving {endpoint.url} for {args.linger:g} s (Ctrl-C or SIGTERM to stop)", flush=True)
            endpoint.linger(args.linger)
        endpoint.close()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from streamguard.evaluation import LabelsError, evaluate, load_labels, render
    from streamguard.schema import RecordFileError, read_request_file
    from streamguard.sinks.alerts import read_alerts

    try:
        labels = load_labels(args.labels)
        alerts = read_alerts(args.alerts)
        traffic = read_request_file(args.traffic) if args.traffic else None
    except (LabelsError, RecordFileError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    result = evaluate(labels, alerts, traffic)
    render(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2, default=float))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from streamguard.demo import DEMO_KEY, run_demo

    settings = _settings(args)
    _check_metrics_flags(args)
    backend = _backend(args, settings)
    endpoint = _endpoint(args, backend, default_key=DEMO_KEY)
    return run_demo(
        settings, backend, seed=args.seed, scale=args.scale, dim=args.dim, live=not args.no_live,
        endpoint=endpoint, pace=args.pace, linger=args.linger,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from streamguard import bench

    return bench.run(args)


def cmd_evasion(args: argparse.Namespace) -> int:
    from streamguard import evasion_table

    settings = _settings(args)
    backend = _backend(args, settings)
    try:
        return evasion_table.run(args, settings, backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streamguard import evaluate_matrix
    from streamguard.config import load_settings

    try:
        if args.list:
            return evaluate_matrix.list_worlds(args)
        # The defaults (or --config), never the environment's STREAMGUARD_* settings.
        settings = load_settings(args.config, environ={})
        backend = _backend(args, settings)
        return evaluate_matrix.run(args, settings, backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_settings(args: argparse.Namespace) -> int:
    """``streamguard settings``: the generated reference of every setting."""
    import json

    from streamguard.config import PROCESS_ENV, settings_reference

    rows = list(settings_reference())
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    for row in rows:
        names = row["env"] + (f" (or --{row['flag'][2:]})" if row["flag"] else "")
        if row["deprecated_env"]:
            names += f" [was {', '.join(row['deprecated_env'])}]"
        default = "unset" if row["default"] is None else repr(row["default"])
        print(f"{row['setting']} = {default}\n    {names}\n    {row['doc']}")
    print("\nNot settings (they locate files and keys before settings exist):")
    for name, what in PROCESS_ENV.items():
        print(f"  {name}: {what}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from streamguard.service import command as run_command

    return run_command.run(args)


COMMANDS = {
    "demo": cmd_demo,
    "simulate": cmd_simulate,
    "replay": cmd_replay,
    "eval": cmd_eval,
    "bench": cmd_bench,
    "run": cmd_run,
    "settings": cmd_settings,
    "evasion": cmd_evasion,
    "evaluate": cmd_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from streamguard.config import initial_log_level

    logging.basicConfig(level=initial_log_level(args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"streamguard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
