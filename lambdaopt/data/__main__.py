"""`python -m lambdaopt.data fetch NAME` (download, verify, cache) and `... info NAME` (statistics).

    python -m lambdaopt.data fetch ml-100k [--cache-dir DIR]
    python -m lambdaopt.data info ml-100k [--cache-dir DIR] [--path FILE]

`info` builds the default splits of the dataset (the lambdaopt/conf/dataset/NAME.yaml options) and prints
their statistics; a user error prints one line `error: ...` and exits 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from lambdaopt.errors import LambdaoptError



def _default_options(name: str) -> dict:
    """The dataset's options as composed from lambdaopt/conf/dataset/NAME.yaml (its schema's defaults)."""
    from omegaconf import OmegaConf

    from lambdaopt.config.datasets import SCHEMAS

    options = OmegaConf.to_container(OmegaConf.structured(SCHEMAS["dataset"][name]), resolve=True)
    options.pop("_target_")
    return options


def main(argv: list[str] | None = None) -> int:
    from lambdaopt.data.fetch import SPECS

    parser = argparse.ArgumentParser(prog="python -m lambdaopt.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("fetch", "download, verify and cache the raw file"),
                               ("info", "build the default splits and print their statistics")):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("name", choices=sorted(SPECS))
        sub.add_argument("--cache-dir", default=None, help="default: $LAMBDAOPT_CACHE or ~/.cache/lambdaopt")
        if command == "info":
            sub.add_argument("--path", default=None, help="a raw file you already have (dataset.path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        if args.command == "fetch":
            return _fetch(args.name, args.cache_dir)
        return _info(args.name, args.cache_dir, args.path)
    except LambdaoptError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _fetch(name: str, cache_dir: str | None) -> int:
    from lambdaopt.data.fetch import SPECS, fetch
    from lambdaopt.data.formats import READERS
    from lambdaopt.data.real import check_counts

    path, reader = fetch(name, cache_dir)
    frame = READERS[reader](path)
    check_counts(SPECS[name], frame, path, strict=True)
    print(f"{name}: {path} ({len(frame):,} ratings, {frame['user'].nunique():,} users, "
          f"{frame['item'].nunique():,} items)")
    return 0


def _info(name: str, cache_dir: str | None, path: str | None) -> int:
    from types import SimpleNamespace

    from lambdaopt.data.real import load_dataset

    options = _default_options(name)
    options.update(cache_dir=cache_dir or options["cache_dir"], path=path or options["path"],
                   split=SimpleNamespace(**options["split"]))
    dataset = load_dataset(**options)
    for key, value in dataset.statistics().items():
        print(f"{key:>16}  {value:,.4f}" if isinstance(value, float) else f"{key:>16}  {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
