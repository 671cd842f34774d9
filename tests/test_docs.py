"""The README and docs say what the code does: commands, names and variables that exist."""

from __future__ import annotations

import re
import shlex

from ddrm_helpers import available_degradations
from ddrm_helpers.cli import build_parser
from ddrm_helpers.paths import CHECKPOINT_DIR_ENV, EXP_DIR_ENV, REGISTRY_ENV

from .conftest import REPO

README = (REPO / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    command = "pip install -r requirements-test.txt && python -m pytest"
    assert f"```bash\n{command}\n```" in README
    assert command in (REPO / ".ci" / "run").read_text().splitlines()


def test_the_readme_main_command_installs_and_runs_the_demo():
    assert "```bash\npip install -r requirements.txt && python -m ddrm_helpers demo\n```" in README


def test_every_cli_command_in_the_docs_parses():
    texts = [README] + [p.read_text() for p in (REPO / "docs").glob("*.md")]
    commands = [m.group(1) for text in texts for m in re.finditer(r"python -m ddrm_helpers ([^`\n|#]+)", text)]
    assert len(commands) >= 8
    parser = build_parser()
    for command in commands:
        words = [w for w in shlex.split(command.replace("\\", "")) if w not in ("...",)]
        words = [w for w in words if not w.startswith("<") and w not in ("[", "]")]
        if words[0] not in ("status", "download", "run", "demo", "restore"):
            continue
        # Placeholders (NAME, DIR, TASK, ...) stand for values: put real ones in for the parse.
        fixed = [{"NAME": "celeba_hq", "DIR": "somewhere", "TASK": "sr4"}.get(w, w) for w in words]
        if "--config" in fixed and fixed[-1] == "--config":
            fixed.append("celeba_hq")
        parser.parse_args(fixed)


def test_environment_variables_named_in_the_docs_exist():
    docs = README + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    named = set(re.findall(r"\bDDRM_[A-Z_]+\b", docs))
    assert named <= {CHECKPOINT_DIR_ENV, EXP_DIR_ENV, REGISTRY_ENV, "DDRM_CONFIG_OVERRIDES"}
    assert CHECKPOINT_DIR_ENV in README


def test_the_tasks_listed_for_the_notebook_exist():
    notebook_doc = (REPO / "docs" / "notebook.md").read_text()
    row = next(line for line in notebook_doc.splitlines() if line.startswith("| `TASK` |"))
    names = {n for n in re.findall(r"`([a-z_0-9]+)`", row) if not n.isdigit()}
    listed = set(available_degradations())
    assert names <= listed, names - listed
    assert {"sr4", "deblur_uni", "inp_mask", "color", "cs4"} <= names
