"""The ``hf-gradmm`` command line: the dispatcher.

``hf-gradmm SUBCOMMAND [--config file.yaml] [--flag value ...]``: each subcommand parses its
argument dataclasses with ``trl.TrlParser``, so a YAML file sets any field and flags given on
the command line override it. The commands live one group a module beside this one.
"""

from __future__ import annotations

import os
import sys

from trl import TrlParser

from hf_gradmm.arguments import ModelArguments, TaskArguments
from hf_gradmm.bench import BenchArguments
from hf_gradmm.cli.dataset import PushArguments, SourceArguments, build, push
from hf_gradmm.cli.evaluate import audit, evaluate, study
from hf_gradmm.cli.info import InfoArguments, PreviewArguments, info, preview
from hf_gradmm.cli.synthesize import bench, synthesize
from hf_gradmm.config import GradMatchConfig
from hf_gradmm.dataset import BuilderConfig
from hf_gradmm.distributed import launch
from hf_gradmm.evaluation import EvaluateArguments, FinetuneConfig
from hf_gradmm.evaluation.audit import AuditArguments
from hf_gradmm.evaluation.study import StudyArguments
from hf_gradmm.version import __version__


def _parse(dataclass_types, argv):
    return TrlParser(dataclass_types).parse_args_and_config(argv)


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
    try:
        parsed = _parse(command_arguments(command), rest)
        if command == "synthesize" and parsed[0].num_processes > 1 and "WORLD_SIZE" not in os.environ:
            return launch([command, *rest], parsed[0].num_processes, parsed[0].use_cpu)
        HANDLERS[command](*parsed)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"hf-gradmm {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
