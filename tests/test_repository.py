"""The repository's promises: two README set-up commands, CI runs the test one, imports flow one way."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2, commands
    app_cmd, test_cmd = commands
    assert app_cmd.endswith("python app.py") and "-r requirements.lock -e ." in app_cmd
    assert "pytest" in test_cmd and "-r requirements-dev.lock -e ." in test_cmd
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines, "'.ci/run' must run exactly the README's test command"


def test_requirements_pin_torch():
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().split()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _full_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_imports_flow_one_way():
    """eflow_core.kernels <- the rest of eflow_core <- studio <- app.py; the library never imports gradio or
    the studio, and the kernels import nothing of the library around them."""
    forbidden = {"eflow_core": {"studio", "gradio"}}
    for package, banned in forbidden.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) & banned
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in (ROOT / "eflow_core" / "kernels").rglob("*.py"):
        outside = {name for name in _full_imports(path) if name.startswith("eflow_core")
                   and not name.startswith("eflow_core.kernels") and name != "eflow_core"}
        assert not outside, f"{path.relative_to(ROOT)} imports {outside}"
        assert not _imports(path) & {"studio", "gradio"}, path


def test_no_sys_path_edits():
    """The package is installed (`pip install -e .`): nothing edits sys.path to find it."""
    places = [*ROOT.glob("*.py"), *(ROOT / "eflow_core").rglob("*.py"), *(ROOT / "studio").rglob("*.py"),
              *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").rglob("*.py"),
              *(ROOT / "notebooks").glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"),
              *(ROOT / "tests").rglob("*.py")]
    patterns = ["sys.path." + verb for verb in ("insert", "append")]      # split: this file must not match itself
    offenders = [str(p.relative_to(ROOT)) for p in places if any(x in p.read_text() for x in patterns)]
    assert not offenders, offenders


def test_design_documents_the_code_cites_are_in_the_repository():
    """Every `DESIGN.md` (or other docs/*.md) the code and docs name is a file of this repository, and the
    quoted section exists."""
    sources = [*ROOT.glob("*.py"), *ROOT.glob("*.md"), *(ROOT / "eflow_core").rglob("*.py"),
               *(ROOT / "studio").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "docs").glob("*.md"),
               *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "scripts").glob("*")]
    cited = 0
    for path in sources:
        text = path.read_text()
        for match in re.finditer(r'(?<![\w/.])((?:docs/)?[A-Z]+\.md)(?: "([^"]+)")?', text):
            doc, section = match.groups()
            target = ROOT / doc if "/" in doc or (ROOT / doc).exists() else ROOT / "docs" / doc
            assert target.is_file(), f"{path.relative_to(ROOT)} cites {doc}, which is not in the repository"
            if section:
                headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
                assert any(h.strip().startswith(section) for h in headings), \
                    f"{path.relative_to(ROOT)} cites {doc} \"{section}\", which has no such section"
            cited += 1
    assert cited >= 5
