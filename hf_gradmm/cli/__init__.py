"""The ``hf-gradmm`` command: main.py dispatches; info.py, synthesize.py, dataset.py and evaluate.py
hold the command groups; docs.py generates docs/configuration.md from the argument dataclasses."""

from hf_gradmm.cli.main import COMMANDS, command_arguments, main

__all__ = ["COMMANDS", "command_arguments", "main"]
