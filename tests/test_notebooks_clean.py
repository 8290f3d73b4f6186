"""The committed notebooks hold one clean top-to-bottom `demo` run, readable anywhere."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\)")


def test_the_series_is_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:1] == ["01_dataset_exploration"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "not one clean top-to-bottom run"
    for i, cell in enumerate(code, 1):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"cell {i} holds an error"
            text = json.dumps({k: v for k, v in out.items() if k != "data"})
            text += json.dumps(out.get("data", {}).get("text/plain", ""))
            assert not MACHINE_PATH.search(text), f"cell {i} output shows a machine path"
    first_output = "".join(code[0]["outputs"][0].get("text", "")) if code[0]["outputs"] else ""
    assert "profile: demo" in first_output, "committed outputs must come from the demo profile"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c["outputs"]), "no pictures"
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown


def reading_minutes(cells: list[dict]) -> float:
    """Return the reading time of a notebook's main line, by the series' rule (docs/notebooks.md): 170 words a
    minute of markdown outside folded asides (<details>) and before the appendix, 20 non-blank code lines a
    minute, and 40 s a figure."""
    words = lines = figures = 0
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if re.match(r"\s*#+\s*Appendix", source):
                break
            words += len(re.sub(r"<details>.*?</details>", " ", source, flags=re.S).split())
        elif cell["cell_type"] == "code":
            lines += sum(1 for line in source.splitlines() if line.strip())
            figures += sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
    return words / 170 + lines / 20 + figures * 40 / 60


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_header_reading_time_follows_the_rule(path):
    cells = json.loads(path.read_text())["cells"]
    header = re.search(r"\*\*Reading time\*\*\s*\|\s*about (\d+) min", "".join(cells[0]["source"]))
    assert header, "the header table has no '| **Reading time** | about N min' row"
    estimate = reading_minutes(cells)
    assert abs(int(header.group(1)) - estimate) <= max(1.0, 0.1 * estimate), \
        f"header says {header.group(1)} min; the rule gives {estimate:.1f}"
