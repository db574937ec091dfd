"""The README's two set-up commands are what CI runs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_the_two_commands():
    head = (REPO / "README.md").read_text().split("## ", 1)[0]
    blocks = re.findall(r"```sh\n(.+?)\n```", head)
    assert len(blocks) == 2
    assert "punktfunk serve" in blocks[0] and "pip install ." in blocks[0]
    assert "pytest" in blocks[1]


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = readme_commands()[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, f".ci/run does not contain the README test command:\n{test_cmd}"
