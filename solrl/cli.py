"""The `solrl` command line."""

from __future__ import annotations

import argparse
import json
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
    info = {
        "solrl": solrl.__version__,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "nvfp4_backends": backends,
    }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="solrl", description="FP4 explore, BF16 train: RL post-training of flow models.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    info = sub.add_parser("info", help="versions and available precision backends, as JSON")
    info.set_defaults(func=_info)
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
