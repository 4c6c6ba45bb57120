"""The ``hf-gradmm`` command line: the dispatcher.

``hf-gradmm SUBCOMMAND [--config file.yaml] [--flag value ...]``: each subcommand parses its
argument dataclasses with ``trl.TrlParser``, so a YAML file sets any field and flags given on
the command line override it. The commands live one group a module beside this one.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

import yaml
from trl import TrlParser

from hf_gradmm import rundir
from hf_gradmm.arguments import ModelArguments, TaskArguments
from hf_gradmm.bench import BenchArguments
from hf_gradmm.cli.dataset import PushArguments, SourceArguments, build, push
from hf_gradmm.cli.evaluate import audit, evaluate, study
from hf_gradmm.cli.info import InfoArguments, PreviewArguments, info, preview
from hf_gradmm.cli.synthesize import Interrupted, bench, interrupted, synthesize
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.dataset import BuilderConfig
from hf_gradmm.distributed import launch
from hf_gradmm.evaluation import EvaluateArguments, FinetuneConfig
from hf_gradmm.evaluation.audit import AuditArguments
from hf_gradmm.evaluation.study import StudyArguments
from hf_gradmm.version import __version__


class _Parser(TrlParser):
    """``TrlParser`` that takes no abbreviation (``--per-clas`` is not ``--per-class``), refuses what it
    does not know with the closest flag, and says so in one line naming the command and its --help
    (argparse's exit status 2), instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, refusing every left-over argument, before the dataclasses (and their checks) are built."""
        namespace, rest = super().parse_known_args(args, namespace)
        if rest:
            flags = [s for action in self._actions for s in action.option_strings]
            unknown = [a.split("=", 1)[0] for a in rest if a[:1] == "-" and not a[1:].replace(".", "", 1).isdigit()]
            if not unknown:
                self.error(f"unexpected argument {' '.join(rest)!r}")
            self.error(_unknown("option", unknown, flags))
        return namespace, rest


def _unknown(kind: str, given: list[str], valid: list[str], quote: str = "", where: str = "") -> str:
    """``unknown option --outer-stepz; did you mean --outer-steps?``: each of ``given`` with the closest
    of ``valid`` (difflib), if one is close; several as ``unknown options: --a (did you mean --b?), --c``."""
    named = []
    for name in given:
        close = difflib.get_close_matches(name, valid, n=1)
        named.append((f"{quote}{name}{quote}", f"did you mean {quote}{close[0]}{quote}?" if close else ""))
    if len(named) == 1:
        name, hint = named[0]
        return f"unknown {kind} {name}{where}" + (f"; {hint}" if hint else "")
    return f"unknown {kind}s{where}: " + ", ".join(name + (f" ({hint})" if hint else "") for name, hint in named)


def _check_config(parser: _Parser, command: str, path: str) -> None:
    """Refuse a ``--config`` file that is unreadable, not a YAML mapping, or has a key that is no field
    of the command's dataclasses (TRL would name it as a flag, ``--outer_stepz``), with the closest key."""
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except OSError as err:
        parser.error(f"cannot read --config {path}: {err.strerror}")
    except yaml.YAMLError as err:
        parser.error(f"--config {path} is not valid YAML: {' '.join(str(err).split())}")
    if not isinstance(config, dict):
        parser.error(f"--config {path} must hold a YAML mapping of keys to values (e.g. 'outer_steps: 4')")
    keys = [f.name for cls in command_arguments(command) for f in fields(cls)]
    unknown = [str(k) for k in config if k not in keys and k != "env"]  # env: TRL sets these variables
    if unknown:
        problem = _unknown("key", unknown, keys, quote="'", where=f" in {path}")
        end = "" if problem.endswith("?") else "."
        parser.error(f"{problem}{end} Valid keys: the fields in docs/configuration.md")


def _parse(command: str, argv: list[str]) -> tuple:
    """The command's argument dataclasses from ``--config`` YAML and flags (flags override the YAML).
    An unknown flag or key is refused before any dataclass is built, so before any work."""
    parser = _Parser(command_arguments(command), prog=f"hf-gradmm {command}", allow_abbrev=False)
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 == len(argv):
            parser.error("--config needs a YAML file: --config run.yaml")
        _check_config(parser, command, argv[at + 1])
    return parser.parse_args_and_config(argv)


USAGE = """usage: hf-gradmm <command> [--config file.yaml] [options]

commands:
  info        version, tasks and models, and what is available offline now (--json)
  preview     load a task and a model; show real examples, label words and zero-shot guesses
  synthesize  make a synthetic dataset by gradient matching (GRADMM)
  bench step  time one x-step: the authors' formulation against ours
  bench round time one whole round, seconds per stage (projection, x-steps, refinement, ...)
  build       filter, score and package a synthesis output (dataset, card, exports)
  push        push a built dataset, its card and config to the Hub (builds a synthesis output first)
  evaluate    fine-tune target models on GRADMM data and on baselines at equal budget; paired intervals
  study       which distance to the class targets predicts how well the evaluated training sets trained?
  audit       membership inference: can a model fine-tuned on the data tell the real target examples apart?

Run 'hf-gradmm <command> --help' for a command's options."""


def command_arguments(command: str) -> list[type]:
    """The argument dataclasses of a subcommand, in parsing order (also read by the docs generator)."""
    return {
        "info": [InfoArguments],
        "preview": [TaskArguments, ModelArguments, PreviewArguments],
        "synthesize": [GradMatchConfig, ModelArguments],
        "bench": [ModelArguments, TaskArguments, BenchArguments],
        "build": [SourceArguments, BuilderConfig],
        "push": [SourceArguments, PushArguments, BuilderConfig],
        "evaluate": [TaskArguments, EvaluateArguments, FinetuneConfig],
        "study": [StudyArguments],
        "audit": [AuditArguments, FinetuneConfig],
    }[command]


COMMANDS = ("info", "preview", "synthesize", "bench", "build", "push", "evaluate", "study", "audit")
HANDLERS = {
    "info": lambda args: info(json_output=args.json),
    "preview": preview,
    "synthesize": synthesize,
    "bench": bench,
    "build": build,
    "push": push,
    "evaluate": evaluate,
    "study": study,
    "audit": audit,
}
POSITIONAL = {"bench": "--what", "build": "--path", "push": "--path"}  # first bare argument -> this flag


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    if argv[0] in {"-V", "--version"}:
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"hf-gradmm: unknown command {command!r}.\n\n{USAGE}", file=sys.stderr)
        return 2
    if command in POSITIONAL and rest and not rest[0].startswith("-"):
        rest = [POSITIONAL[command], rest[0], *rest[1:]]
    previous = os.environ.get(rundir.COMMAND_ENV)
    os.environ[rundir.COMMAND_ENV] = shlex.join(["hf-gradmm", *argv])  # for the lock file and the resume hint
    try:
        parsed = _parse(command, rest)
        if command == "synthesize" and parsed[0].num_processes > 1 and "WORLD_SIZE" not in os.environ:
            return _launch(parsed[0], [command, *rest])
        HANDLERS[command](*parsed)
    except Interrupted as err:
        if str(err):
            print(err, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"hf-gradmm {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as err:
        print(f"hf-gradmm {command}: error: {err}", file=sys.stderr)
        return 1
    finally:
        if previous is None:
            os.environ.pop(rundir.COMMAND_ENV, None)
        else:
            os.environ[rundir.COMMAND_ENV] = previous
    return 0


def _launch(config, argv: list[str]) -> int:
    """``--num-processes N``: this process checks and locks the output folder, then starts the N
    processes (they inherit the lock) and waits for them."""
    rundir.check_output_dir(config.output_dir)
    with rundir.folder_lock(config.output_dir, rundir.command_line()):
        rundir.check_resumable(Path(config.output_dir), config.resume)
        try:
            return launch(argv, config.num_processes, config.use_cpu)
        except KeyboardInterrupt:
            raise interrupted(config) from None


if __name__ == "__main__":
    sys.exit(main())
