"""The repository's promises: README commands, CI script and packaging stay in sync."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert len(ci_lines) == 1
    assert ci_lines[0] in (ROOT / "README.md").read_text()


def test_grammar_ships_inside_the_wheel():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"grammar/msml.lark" = "msml_dsl/grammar/msml.lark"' in text


def test_every_model_folder_has_model_data_and_readme():
    for folder in (ROOT / "models").iterdir():
        if folder.is_dir():
            assert (folder / "model.msml").is_file(), folder
            assert (folder / "README.md").is_file(), folder
            assert list(folder.glob("*.csv")), folder
