"""What CONTRIBUTING.md promises a contributor: the pre-commit hooks pass on the tree
as it is, from the project's virtualenv, without the network."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_the_pre_commit_hooks_pass_on_every_file_of_the_tree(tmp_path):
    tree = tmp_path / "tree"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # (a file deleted but not yet committed is skipped)
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    (tree / ".venv").symlink_to(Path(sys.prefix))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tree, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tree, check=True)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}

    hooks = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "pre-commit"), "run", "--all-files", "--show-diff-on-failure"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert hooks.returncode == 0, hooks.stdout[-5000:] + hooks.stderr[-2000:]
    passed = [line for line in hooks.stdout.splitlines() if line.endswith("Passed")]
    for hook in ("ruff (lint, with fixes)", "ruff format", "django-upgrade", "every model change has its migration"):
        assert [line for line in passed if line.startswith(hook)], hooks.stdout


def test_every_link_of_the_readme_leads_to_a_file_of_the_repository():
    """The README is the front door: each of its links into docs/ (and to CONTRIBUTING
    and the CHANGELOG) names a file that exists; mkdocs --strict checks the pages'."""
    import re

    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [target for target in targets if "://" not in target]

    assert {"docs/configuration.md", "docs/api.md", "CONTRIBUTING.md"} <= set(local)
    assert [target for target in local if not (ROOT / target).is_file()] == []
