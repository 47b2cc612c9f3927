"""The ``hierclf`` command line.

Each subcommand lives in a module of this package with ``register(subparsers)`` and ``run(args) -> int``.
Modules are imported only when needed and import torch only inside ``run``, so ``hierclf validate`` and
``hierclf show`` stay fast. Errors a user can cause print one line and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hierclf.options import Registry

#: subcommand -> the module that implements it; registration order is the order of ``hierclf --help``
COMMANDS: Registry[str] = Registry("command")
COMMANDS.add("validate", "hierclf.cli.validate", summary="check taxonomy files")
COMMANDS.add("check-protocol", "hierclf.cli.check_protocol", summary="check evaluation protocols")
COMMANDS.add("show", "hierclf.cli.show", summary="draw a taxonomy as a tree")
COMMANDS.add("schema", "hierclf.cli.schema", summary="print the JSON Schema of taxonomy files")
COMMANDS.add("rollup", "hierclf.cli.rollup", summary="sum leaf probabilities up the tree")
COMMANDS.add("train", "hierclf.cli.train", summary="train backbone + head from a config")
COMMANDS.add("evaluate", "hierclf.cli.evaluate", summary="evaluate predictions under a protocol")
COMMANDS.add("compare", "hierclf.cli.compare", summary="compare models on the same test cases")
COMMANDS.add("study", "hierclf.cli.study", summary="train a protocol's seeds and report")
COMMANDS.add("predict", "hierclf.cli.predict", summary="score images with a trained model")
COMMANDS.add("export", "hierclf.cli.export", summary="export a model as TorchScript, torch.export or ONNX")
COMMANDS.add("probe", "hierclf.cli.probe", summary="kNN and linear probes on frozen features")
COMMANDS.add("efficiency", "hierclf.cli.efficiency", summary="label-efficiency curves")
COMMANDS.add("shift", "hierclf.cli.shift", summary="distribution shift across a metadata column")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: ``--strict``: the command finished and wrote its outputs, but the run raised warnings
EXIT_WARNINGS = 3


def _available_commands() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in COMMANDS:
        module = COMMANDS.get(name)
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the command exists but its own import failed: that is a bug
                raise
    return found


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``hierclf rollup: error: ... (see hierclf rollup --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from hierclf import __version__

    parser = _Parser(
        prog="hierclf",
        description="Hierarchical taxonomy classification for medical images.",
    )
    parser.add_argument("--version", action="version", version=f"hierclf {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _available_commands().values():
        module.register(sub)  # type: ignore[attr-defined]
    return parser


def _one_line(text: object) -> str:
    """A message on one line: the CLI's contract is one line on stderr per error."""
    return " ".join(str(text).split())


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    return code if isinstance(code, int) else (0 if code is None else EXIT_FAILURE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hierclf`` command and return its exit code: 0 done, 1 failed (one line on stderr naming
    what is wrong), 2 a usage error; 130 interrupted. Only hierclf's own bugs print "internal error"."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (printed as one line), or --help / --version
        return _exit_code(exc)
    args.argv = ["hierclf", *(sys.argv[1:] if argv is None else argv)]  # the command line, for provenance
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="hierclf: %(levelname)s: %(message)s", stream=sys.stderr)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from hierclf.errors import HierclfError, missing_extra
    from hierclf.io.atomic import protected_inputs

    try:
        with protected_inputs(_input_files(args)):
            return int(args.func(args) or 0)
    except SystemExit as exc:  # a command's own usage check (parser.error)
        return _exit_code(exc)
    except ModuleNotFoundError as exc:  # a torch-backed command in the core install: say which extra
        found = missing_extra(exc, "this command")
        if found is None:
            return _internal_error(args, exc)
        print(f"hierclf {args.command}: error: {found}", file=sys.stderr)
        return EXIT_FAILURE
    except HierclfError as exc:
        print(f"hierclf {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"hierclf {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `hierclf show big.yaml | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        return _internal_error(args, exc)


#: commands that keep their own outputs in a run folder and rewrite them by design (a resumed checkpoint,
#: a study's reports); their reuse rules are in docs/training.md and docs/study.md
_REWRITES_ITS_RUN = frozenset({"train", "study"})


def _input_files(args: argparse.Namespace) -> list[Path]:
    """Every existing regular file a command was given besides ``--out``: no output may replace one."""
    if args.command in _REWRITES_ITS_RUN:
        return []
    given: list[Path] = []
    for name, value in vars(args).items():
        if name in ("out", "func", "command"):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, Path)) and str(item) and Path(item).is_file():
                given.append(Path(item))
    return given


def _internal_error(args: argparse.Namespace, exc: Exception) -> int:
    if os.environ.get("HIERCLF_DEBUG"):
        raise exc
    print(
        f"hierclf {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
        "(set HIERCLF_DEBUG=1 for a traceback, and please report it)",
        file=sys.stderr,
    )
    return EXIT_FAILURE
