"""The command line: every sub-command's help renders (a stray '%' in a help string breaks argparse)."""
from __future__ import annotations

import pytest

from bench.cli import build_parser, main


def test_help_of_the_program_and_of_every_subcommand_renders(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    for argv in [["--help"]] + [[c, "--help"] for c in commands]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0, argv
    assert "verdicts" in capsys.readouterr().out
