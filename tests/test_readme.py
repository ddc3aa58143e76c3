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
