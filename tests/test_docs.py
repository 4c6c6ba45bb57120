"""The documentation stays true to the code: the configuration reference, every CLI flag, links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hf_gradmm.cli import COMMANDS, command_arguments, main
from hf_gradmm.cli.docs import PAGE, render

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_generated_from_the_code():
    assert PAGE.read_text() == render(), "docs/configuration.md is stale: run `python -m hf_gradmm.cli.docs`."


@pytest.mark.parametrize("command", COMMANDS)
def test_every_cli_flag_is_documented_and_help_renders(command, capsys):
    from trl import TrlParser

    parser = TrlParser(command_arguments(command))
    page = PAGE.read_text()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--") and "_" not in s}
    undocumented = [f for f in flags if f not in ("--help", "--config") and not f.startswith("--no-") and f not in page]
    assert not undocumented, f"{command}: flags missing from docs/configuration.md: {undocumented}"
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0 and "--" in capsys.readouterr().out


def test_relative_links_in_the_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_readme_cites_the_paper_as_the_dataset_card_does():
    from hf_gradmm.dataset.card import PAPER_BIBTEX

    assert PAPER_BIBTEX in (ROOT / "README.md").read_text()
