"""The README's Python section runs as written, on the demo data, in a fresh folder."""

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_python_section_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python"):text.index("## Command line")]
    code, = re.findall(r"```python\n(.*?)```", section, re.S)
    (tmp_path / "pipelines").mkdir()
    shutil.copy(ROOT / "pipelines" / "demo.toml", tmp_path / "pipelines")
    monkeypatch.chdir(tmp_path)  # the demo data and the cache go here
    exec(compile(code, "README.md", "exec"), {})
    accuracy = float(re.search(r"parts: ([\d.]+)% top-1", capsys.readouterr().out).group(1))
    assert accuracy > 50  # the planted patterns: chance is 1/6


def test_readme_settings_table_is_generated_from_the_declarations(tmp_path, capsys):
    """README's table is ``partlearn settings``'s: regenerate it with
    ``python -m partlearn settings --write README.md`` after changing a setting."""
    from partlearn.cli import main
    from partlearn.config import TABLE_BEGIN, TABLE_END, settings, settings_table

    text = (ROOT / "README.md").read_text()
    table = text[text.index(TABLE_BEGIN) + len(TABLE_BEGIN):text.index(TABLE_END)]
    assert table.strip() == settings_table().strip(), \
        "README's settings table is stale: run `python -m partlearn settings --write README.md`"
    assert len(table.strip().splitlines()) == 2 + len(settings())  # one row per setting
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == settings_table()
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{TABLE_BEGIN}\n| old |\n{TABLE_END}\n\nafter\n")
    assert main(["settings", "--write", str(stale)]) == 0
    assert stale.read_text() == f"# x\n\n{TABLE_BEGIN}\n{settings_table()}{TABLE_END}\n\nafter\n"
    assert "rewritten" in capsys.readouterr().out
    assert main(["settings", "--write", str(stale)]) == 0
    assert "up to date" in capsys.readouterr().out
    stale.write_text("no markers\n")
    assert main(["settings", "--write", str(stale)]) == 2
    assert "settings:begin" in capsys.readouterr().err
