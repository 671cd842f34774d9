"""The README and docs say what the code does: commands, names and variables that exist."""

from __future__ import annotations

import re
import shlex

from ddrm_helpers import available_degradations, threads
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
        if words[0] not in ("status", "download", "run", "demo", "restore", "eval", "app"):
            continue
        # Placeholders (NAME, DIR, TASK, ...) stand for values: put real ones in for the parse.
        fixed = [{"NAME": "celeba_hq", "DIR": "somewhere", "TASK": "sr4", "PATH": "data"}.get(w, w) for w in words]
        if "--config" in fixed and fixed[-1] == "--config":
            fixed.append("celeba_hq")
        parser.parse_args(fixed)


def test_environment_variables_named_in_the_docs_exist():
    docs = README + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    named = set(re.findall(r"\bDDRM_[A-Z_]+\b", docs))
    # DDRM_APP_SCREENSHOT: where tests/test_app_browser.py keeps its screenshot
    assert named <= {CHECKPOINT_DIR_ENV, EXP_DIR_ENV, REGISTRY_ENV, "DDRM_CONFIG_OVERRIDES", "DDRM_APP_SCREENSHOT",
                     threads.ENV}
    assert CHECKPOINT_DIR_ENV in README


def test_the_tasks_listed_for_the_notebook_exist():
    notebook_doc = (REPO / "docs" / "notebook.md").read_text()
    row = next(line for line in notebook_doc.splitlines() if line.startswith("| `TASK` |"))
    names = {n for n in re.findall(r"`([a-z_0-9]+)`", row) if not n.isdigit()}
    listed = set(available_degradations())
    assert names <= listed, names - listed
    assert {"sr4", "deblur_uni", "inp_mask", "color", "cs4"} <= names


def set_repo_url_tool():
    """tools/set_repo_url.py, loaded from its file (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("set_repo_url", REPO / "tools" / "set_repo_url.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_colab_link_opens_the_repository_the_notebook_clones():
    tool = set_repo_url_tool()
    notebook_repo_url, parse_github_url, readme_colab_links = (tool.notebook_repo_url, tool.parse_github_url,
                                                               tool.readme_colab_links)

    owner, repo = parse_github_url(notebook_repo_url())
    links = readme_colab_links()
    assert links and all((o, r) == (owner, repo) for o, r, _ in links), (links, owner, repo)
    assert "python tools/set_repo_url.py https://github.com/OWNER/REPO" in README  # the maintainer's one edit


def test_set_repo_url_rewrites_the_notebook_and_the_readme_together(tmp_path):
    import nbformat

    tool = set_repo_url_tool()
    main, notebook_repo_url, readme_colab_links, set_repo_url = (tool.main, tool.notebook_repo_url,
                                                                 tool.readme_colab_links, tool.set_repo_url)

    for name in ("README.md", "ddrm_demo.ipynb"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    before = (tmp_path / "ddrm_demo.ipynb").read_text().splitlines()
    assert set_repo_url("https://github.com/someone/ddrm-demo.git", root=tmp_path) == \
        "https://github.com/someone/ddrm-demo"
    assert notebook_repo_url(tmp_path) == "https://github.com/someone/ddrm-demo"
    assert {link[:2] for link in readme_colab_links(tmp_path)} == {("someone", "ddrm-demo")}
    after = (tmp_path / "ddrm_demo.ipynb").read_text().splitlines()
    assert [a for a, b in zip(after, before) if a != b] == [
        '    "REPO_URL = \\"https://github.com/someone/ddrm-demo\\"\\n",']  # one line changed, format kept
    nbformat.validate(nbformat.read(tmp_path / "ddrm_demo.ipynb", as_version=4))
    assert main(["https://gitlab.com/someone/ddrm-demo"]) == 2  # Colab opens GitHub repositories only


def requirements(text: str) -> dict:
    from packaging.requirements import Requirement

    found = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip().strip('",')
        if line and not line.startswith("-") and not line.startswith("["):
            requirement = Requirement(line)
            found[requirement.name] = requirement.specifier
    return found


def test_installing_keeps_what_colab_has_ipywidgets_7_and_any_newer_torch():
    listed = requirements((REPO / "requirements.txt").read_text())
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)
    assert requirements(block) == listed  # the same list in both places
    assert "7.7.1" in listed["ipywidgets"] and "8.1.5" in listed["ipywidgets"]  # Colab's 7.7.1 is kept
    for name, specifier in listed.items():  # lower bounds only: never an upgrade of what satisfies them
        assert all(s.operator == ">=" for s in specifier), (name, specifier)
    assert {"torch", "torchvision", "numpy", "matplotlib"} <= set(listed)
    app = requirements((REPO / "requirements-app.txt").read_text())  # the app's Gradio: a lower bound too
    extra = re.search(r"^app = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert requirements(extra.replace(",", "\n")) == app and all(s.operator == ">=" for s in app["gradio"])


def test_the_docs_claim_no_checkpoint_upload_cell_and_no_cell_that_needs_another():
    import json

    notebook = json.loads((REPO / "ddrm_demo.ipynb").read_text())
    prose = "".join("".join(c["source"]) for c in notebook["cells"])
    for text in (README, (REPO / "docs" / "notebook.md").read_text(), prose):
        assert "upload cell" not in text  # every upload button takes images; checkpoints are placed by hand
    assert 'accept="image/*"' in (REPO / "ddrm_helpers" / "notebook.py").read_text()
