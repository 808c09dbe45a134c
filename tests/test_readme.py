"""The README as a new reader meets it: the choice that changes the install comes before the first command."""
from __future__ import annotations

from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_cpu_only_torch_choice_comes_before_the_first_install_command():
    first_command = README.index("```bash")
    assert README.index("download.pytorch.org/whl/cpu") < README.index('pip install -e ".[cpu]"')
    assert README.index("CPU") < first_command, "the CPU-only choice must be read before the first command"
