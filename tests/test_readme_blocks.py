"""Every shell block of README.md runs, verbatim, in a fresh copy of the repository (issue 24).

The rule, for whoever adds a block: each fenced block tagged `bash`, `sh`, `shell` or `console` is run command by
command (a command is a line, with its `\\` continuations; blank and `#` lines are not commands), each in
`bash` from the root of a copy of the working tree's files (`git ls-files`: what a clone holds, plus files not yet
committed) whose `.venv` is this checkout's, after `source .venv/bin/activate`, as the README's set-up says
(offline: `HF_HUB_OFFLINE=1`). A command that cannot run in a test (`make demo`/`make test`, which CI runs itself;
hub downloads; GPU or multi-node launches; placeholder paths) is skipped only by a marker, an HTML comment on the line
just before the block's opening fence (invisible on GitHub):

    <!-- readme-test: skip: REASON -->           the whole block
    <!-- readme-test: skip 2-4,6: REASON -->     commands 2 to 4 and 6 of the block (counted from 1)

The test fails on a command that fails without a marker, a marker without a reason, a marker naming a command the
block does not have, and a `readme-test` comment that is not directly above a shell block.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELLS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*readme-test:(.*?)-->\s*$")
SKIP = re.compile(r"^\s*skip(?:\s+(?P<lines>[\d,\s-]+?))?\s*:\s*(?P<reason>.*?)\s*$")
TIMEOUT_S = 120  # per command; the block's commands are `--help` / `--dry-run` style


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    commands: list[str]
    skipped: dict[int, str]  # command number (1-based) -> reason


def parse_marker(text: str, where: str, count: int) -> dict[int, str]:
    """`{command number: reason}` for one `readme-test` marker of a block of `count` commands."""
    match = SKIP.match(text)
    if not match:
        raise ValueError(
            f"{where}: unknown readme-test marker {text.strip()!r}; write 'skip: REASON' or 'skip 2-4: REASON'"
        )
    if not match["reason"]:
        raise ValueError(f"{where}: a readme-test skip needs a reason after the colon")
    if match["lines"] is None:
        return dict.fromkeys(range(1, count + 1), match["reason"])
    numbers = []
    for part in match["lines"].replace(" ", "").split(","):
        first, _, last = part.partition("-")
        numbers += range(int(first), int(last or first) + 1)
    outside = [n for n in numbers if not 1 <= n <= count]
    if outside:
        raise ValueError(f"{where}: the marker names command {outside[0]}, the block has {count}")
    return dict.fromkeys(numbers, match["reason"])


def commands_of(lines: list[str]) -> list[str]:
    """A block's commands: lines joined over trailing backslashes; blank and comment lines dropped."""
    commands, current = [], ""
    for line in lines:
        current += line
        if line.rstrip().endswith("\\"):
            current += "\n"
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current)
        current = ""
    return commands


def shell_blocks(text: str, name: str = "README.md") -> list[Block]:
    """The shell blocks of a markdown text with their markers, checked as the module docstring says."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i + 1]) if marker and i + 1 < len(lines) else FENCE.match(lines[i])
        if marker and not (fence and fence[1] in SHELLS):
            raise ValueError(f"{name}:{i + 1}: a readme-test marker must be on the line just above a shell block")
        if not fence:
            i += 1
            continue
        start = i + 1 if marker else i  # the fence's index
        end = next((j for j in range(start + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        if fence[1] in SHELLS:
            commands = commands_of(lines[start + 1 : end])
            skipped = parse_marker(marker[1], f"{name}:{i + 1}", len(commands)) if marker else {}
            blocks.append(Block(start + 1, commands, skipped))
        i = end + 1
    return blocks


# ---------------------------------------------------------------- the rule, on hand-made markdown
def test_markers_skip_blocks_or_commands_and_need_a_reason():
    text = "\n".join(
        [
            "<!-- readme-test: skip: CI runs it -->",
            "```bash",
            "make demo   # a comment after the command",
            "```",
            "text",
            "<!-- readme-test: skip 2-3: GPUs -->",
            "```bash",
            "# a comment line is not a command",
            "python a.py --dry-run \\",
            "    --flag",
            "",
            "make train",
            "launch/run.sh x",
            "```",
            "```python",
            "print('not shell')",
            "```",
            "```sh",
            "dler --help",
            "```",
        ]
    )
    first, second, third = shell_blocks(text)
    assert (first.line, first.commands, first.skipped) == (
        2,
        ["make demo   # a comment after the command"],
        {1: "CI runs it"},
    )
    assert second.commands == ["python a.py --dry-run \\\n    --flag", "make train", "launch/run.sh x"]
    assert second.skipped == {2: "GPUs", 3: "GPUs"}
    assert (third.line, third.commands, third.skipped) == (18, ["dler --help"], {})


@pytest.mark.parametrize(
    "marker, message",
    [
        ("<!-- readme-test: skip -->", "unknown readme-test marker"),
        ("<!-- readme-test: skip:   -->", "needs a reason"),
        ("<!-- readme-test: skip 3: GPUs -->", "names command 3, the block has 1"),
        ("<!-- readme-test: run fast -->", "unknown readme-test marker"),
    ],
)
def test_a_bad_marker_is_refused_naming_its_line(marker, message):
    with pytest.raises(ValueError, match=message) as error:
        shell_blocks(f"text\n{marker}\n```bash\ndler --help\n```\n")
    assert str(error.value).startswith("README.md:2:")


def test_a_marker_away_from_a_shell_block_is_refused():
    with pytest.raises(ValueError, match="README.md:1: a readme-test marker must be on the line just above"):
        shell_blocks("<!-- readme-test: skip: x -->\n\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="just above a shell block"):
        shell_blocks("<!-- readme-test: skip: x -->\n```python\nx = 1\n```\n")


# ---------------------------------------------------------------- the README itself
def fresh_copy(destination: Path) -> Path:
    """The working tree's files as a clone has them (tracked, plus new files not ignored), and this checkout's .venv
    linked in, as `make install` would have made it."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of the repository's files")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    (destination / ".venv").symlink_to(ROOT / ".venv")
    return destination


@pytest.mark.slow
def test_every_readme_shell_block_runs_verbatim_in_a_fresh_copy(tmp_path):
    text = (ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in text, "the README no longer says how to activate .venv: update this test"
    if not (ROOT / ".venv" / "bin" / "activate").is_file():
        pytest.skip("no .venv in this checkout (make install creates it)")
    clone = fresh_copy(tmp_path / "dler")
    # the copy's own dler, as its `pip install -e .` would import it (the linked .venv's editable install is ROOT's)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}
    ran = 0
    for block in shell_blocks(text):
        for number, command in enumerate(block.commands, 1):
            if number in block.skipped:
                continue
            proc = subprocess.run(
                ["bash", "-c", f"source .venv/bin/activate && {command}"],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
            assert proc.returncode == 0, (
                f"README.md:{block.line}: `{command}` exited {proc.returncode} in a fresh copy:\n"
                f"{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}\nFix it, or mark the block (rule: {__file__})"
            )
            ran += 1
    assert ran >= 1, "no README command ran: every block is marked skip"
