"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README must hold a Python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert "torch.Size([2, 64])" in capsys.readouterr().out
    exec(compile(blocks[1], "README.md", "exec"), namespace)  # the method layer, continuing the first example
    assert float(capsys.readouterr().out.strip()) >= 1.0


def test_readme_opens_with_the_two_commands():
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert commands[0].strip().startswith("pip install torch==2.13.0") and "mmaccel generate image" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1].strip() in (README.parent / ".ci" / "run").read_text(), "CI must run the README's command"
