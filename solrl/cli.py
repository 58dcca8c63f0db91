"""The `solrl` command line."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys


def _info(_: argparse.Namespace) -> int:
    """Print versions and which precision backends can run on this machine, as JSON."""
    import torch

    import solrl
    from solrl.quant.backends import BackendUnavailable, available_backends, get_backend

    backends = {}
    for name in available_backends():
        try:
            get_backend(name).check("nvfp4")
            backends[name] = "ok"
        except BackendUnavailable as exc:
            backends[name] = f"unavailable: {exc}"
    info = {"solrl": solrl.__version__, "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "nvfp4_backends": backends}
    print(json.dumps(info, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from solrl.config import ConfigError, load_config
    from solrl.metrics import TOKEN_ENV

    sets = args.set
    if args.resume and args.config is None:  # the run's own config (its injected faults disarmed), --set on top
        from solrl.run_folder import run_config_file

        args.config = run_config_file(pathlib.Path(args.resume).expanduser())
        sets = ["cluster.faults=[]", *sets] if args.config else sets
    try:
        config = load_config(args.config, sets)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.local and (args.address or args.metrics_port is not None or config.cluster.stand_in is not None):
        print("solrl train --local: --address, --metrics-port and cluster.stand_in need the distributed run; drop --local", file=sys.stderr)
        return 2
    if args.resume and not args.out:
        args.out = args.resume  # a resumed run keeps writing to its own folder
    if args.resume:
        args.resume = str(pathlib.Path(args.resume).expanduser())
    out = pathlib.Path(args.out or f"runs/{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}").expanduser()
    from solrl.learner.checkpoint import CheckpointError
    from solrl.preflight import PreflightError, preflight
    from solrl.run_folder import RunFolderError, check_run_folder

    try:
        preflight(config, args.metrics_port, args.metrics_host, bool(os.environ.get(TOKEN_ENV)))
        check_run_folder(out, pathlib.Path(args.resume) if args.resume else None, config)
    except (PreflightError, RunFolderError, CheckpointError) as exc:
        print(f"solrl train: {exc}", file=sys.stderr)
        return 2
    if args.local:
        from solrl.local_run import LocalRun

        report = LocalRun(config, out).run(resume=args.resume)
    else:
        from solrl.cluster import runtime
        from solrl.cluster.driver import Driver
        from solrl.cluster.startup import StartupTimeout

        started = runtime.start(config, args.address)
        try:
            metrics = {"metrics_port": args.metrics_port, "metrics_host": args.metrics_host, "metrics_token": os.environ.get(TOKEN_ENV) or None}
            report = Driver(config, out, resume=args.resume, live=sys.stderr.isatty(), **metrics).run()
        except StartupTimeout as exc:
            print(f"solrl train: {exc}", file=sys.stderr)
            return 1
        finally:
            runtime.stop(started)
    from solrl.evaluation import headline

    metric = report["base_eval"]["metric"]
    summary = {"out": str(out), "metric": metric, f"base_{metric}": headline(report["base_eval"]), f"final_{metric}": headline(report["final_eval"])}
    summary["improvement"] = report["improvement"]
    if "preference_gap_closed" in report:
        base, final = report["base_eval"], report["final_eval"]
        summary |= {"base_preference": base["preference"], "best_of_preference": base["best_of"]["preference"], "final_preference": final["preference"]}
        summary["preference_gap_closed"] = report["preference_gap_closed"]
        summary |= {"accuracy_change": report["accuracy_change"], "accuracy_change_se": report["accuracy_change_se"]}
    print(json.dumps(summary | {"seconds": report["seconds"]}))
    return 0


def _report(args: argparse.Namespace) -> int:
    import pathlib

    from solrl.report import write_report

    run = pathlib.Path(args.run)
    if not (run / "metrics.jsonl").is_file() and not (run / "eval.json").is_file():
        print(f"solrl report: {run} holds no metrics.jsonl or eval.json; pass a run folder (`solrl train --out DIR`)", file=sys.stderr)
        return 2
    print(write_report(run))
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from solrl.config import ConfigError, load_config
    from solrl.config_docs import schema, show

    if args.schema:
        print(schema(), end="")
        return 0
    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(show(config), end="")
    return 0


def _reward_serve(args: argparse.Namespace) -> int:
    import os
    import signal

    from solrl.rewards.registry import build_one, reward_spec
    from solrl.rewards.service import TOKEN_ENV, RewardServer

    model = {"path": args.path, "device": args.device} if not args.reward.startswith("shapes") else {}
    reward = build_one(reward_spec(name=args.reward, **model))
    try:
        limits = {"max_batch": args.max_batch, "max_side": args.max_side, "max_pixels": args.max_pixels, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
        server = RewardServer(reward, args.reward, args.host, args.port, os.environ.get(TOKEN_ENV) or None, **limits)
    except (ValueError, OSError) as exc:
        print(f"solrl reward serve: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"serving": args.reward, "address": server.address, "token": bool(os.environ.get(TOKEN_ENV))}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solrl", description="FP4 explore, BF16 train: RL post-training of flow models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    info = sub.add_parser("info", help="versions and available precision backends, as JSON")
    info.set_defaults(func=_info)

    train = sub.add_parser("train", help="run Sol-RL (default: the shapes run)")
    train.add_argument("config", nargs="?", help="YAML run config (default: the shipped shapes.yaml)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field, e.g. train.iterations=5")
    train.add_argument("--out", help="run directory (default: runs/<timestamp>)")
    train.add_argument("--local", action="store_true", help="run in this process, without Ray")
    train.add_argument("--address", help="join an existing Ray cluster (default: start an embedded local one)")
    train.add_argument("--resume", metavar="DIR", help="continue a run from its newest checkpoint (a run folder or checkpoint folder), with its config.yaml unless CONFIG is given")
    train.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on PORT (0: any free port)")
    train.add_argument(
        "--metrics-host", default="127.0.0.1", help="address the metrics endpoint binds (default loopback; any other needs SOLRL_METRICS_TOKEN)"
    )
    train.set_defaults(func=_train)

    report = sub.add_parser("report", help="draw a run folder as RUN/report.html (every run writes one when it ends)")
    report.add_argument("run", help="the run folder")
    report.set_defaults(func=_report)

    config = sub.add_parser("config", help="the run configuration").add_subparsers(dest="config_command", required=True)
    show = config.add_parser("show", help="print the resolved config, each field's description beside it")
    show.add_argument("config", nargs="?", help="YAML run config (default: the shipped shapes.yaml)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    show.add_argument("--schema", action="store_true", help="print the config's JSON schema instead")
    show.set_defaults(func=_config_show)

    reward = sub.add_parser("reward", help="reward models as services").add_subparsers(dest="reward_command", required=True)
    serve = reward.add_parser("serve", help="serve one reward over gRPC (protos/solrl/rewards/v1/reward.proto)")
    from solrl.rewards.registry import LOCAL_REWARDS

    serve.add_argument("--reward", required=True, choices=LOCAL_REWARDS)
    serve.add_argument("--path", help="the reward's local weights folder (CLIP-family rewards)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs SOLRL_REWARD_TOKEN set")
    serve.add_argument("--port", type=int, default=50051, help="port (0: any free port, printed on start)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--max-batch", type=int, default=256, help="most images per request")
    serve.add_argument("--max-side", type=int, default=4096, help="largest image side accepted, in pixels")
    serve.add_argument("--tls-cert", help="PEM certificate to serve TLS with (required, with a token, off loopback)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--max-pixels", type=int, default=256 * 1024 * 1024, help="decoded pixels per request (default: 256 images of 1024x1024)")
    serve.set_defaults(func=_reward_serve)

    from solrl.cluster.cli import add_commands as add_cluster_commands

    add_cluster_commands(sub)

    from solrl.toy_app.cli import add_commands as add_toy_commands

    add_toy_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import solrl

        print(solrl.__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
