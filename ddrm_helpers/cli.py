"""The command line: ``python -m ddrm_helpers <command>``.

    python -m ddrm_helpers status   [--config NAME ...] [--dir DIR]
    python -m ddrm_helpers download [--config NAME ... | --all] [--dir DIR] [--quiet]

``status`` exits 0 after showing every config; asked about given configs (``--config``) it exits 1
when one of them cannot run. ``download`` exits 1 when a checkpoint it was asked for is still
missing afterwards.
"""

from __future__ import annotations

import argparse
import sys

from .config import available_configs
from .errors import ConfigError
from .paths import CHECKPOINT_DIR_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddrm_helpers",
        description="DDRM image restoration with three pretrained diffusion models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_common(sub):
        sub.add_argument("--config", action="append", choices=available_configs(), metavar="NAME",
                         help=f"a config ({', '.join(available_configs())}); repeat for several")
        sub.add_argument("--dir", metavar="DIR",
                         help=f"checkpoint folder (default: ${CHECKPOINT_DIR_ENV}, else exp/logs)")

    status = commands.add_parser("status", help="show which checkpoints are present and verified")
    add_common(status)
    status.set_defaults(handler=_status)

    download = commands.add_parser("download", help="download and verify the checkpoints of configs")
    add_common(download)
    download.add_argument("--all", action="store_true", help="every config (the default)")
    download.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    download.set_defaults(handler=_download)
    return parser


def _status(args) -> int:
    from .status import checkpoint_status

    status = checkpoint_status(args.config, args.dir)
    print(status)
    return 0 if not args.config or status.all_ready else 1


def _download(args) -> int:
    from .status import ensure_checkpoints

    if args.all and args.config:
        raise ConfigError("give --config NAME ... or --all, not both")
    status = ensure_checkpoints(args.config, args.dir, progress=not args.quiet, quiet=args.quiet)
    print()
    print(status)
    return 0 if status.all_ready else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
