"""Reports: one document, two renderers that say the same thing; the trial table shows what
ran, the outside load and why a trial was run again."""

from pathlib import Path

from dcnprobe.harness.runner import TrialResult
from dcnprobe.report.comparison import trial_table
from dcnprobe.report.document import (
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from dcnprobe.settings import Settings


def test_markdown_and_html_carry_the_same_content(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    fig.savefig(tmp_path / "plot.png")
    doc = Document("A title")
    doc.add(Heading("Findings"), Paragraph("Slow: `num_workers` **matters**"), Bullets(["one", "two"]),
            Table(["a", "b|c"], [["1", "x|y"]]), Image(Path("plot.png"), "a plot"))
    md = to_markdown(doc)
    assert "# A title" in md and "- two" in md and "x\\|y" in md and "![a plot](plot.png)" in md
    page = to_html(doc, tmp_path)
    assert "<code>num_workers</code> <strong>matters</strong>" in page
    assert "data:image/png;base64," in page  # self-contained: the image is embedded
    assert "<td>x|y</td>" in page


def result(number, status="ok", **fields):
    settings = Settings(device="cpu", num_workers=number)
    return TrialResult(key=str(number), spec={"settings": settings.to_dict(), "replicate": fields.pop("replicate", 0)},
                       status=status, ratio=1.0, ratio_ci=[0.9, 1.1], epoch_s=[10.0, 10.5], **fields)


def test_the_trial_table_shows_load_what_ran_and_reruns():
    ran = {**Settings(device="cpu", num_workers=2).to_dict(), "cache_clear": "every:1"}
    table = trial_table([
        result(0),
        result(2, status="contended", outside_load={"1": 0.02, "2": 0.45}, ran=ran),
        result(2, replicate=2),
    ], Settings(device="cpu"))
    header = table.header
    rows = [dict(zip(header, row)) for row in table.rows]
    assert rows[0]["settings"] == "`(the reference settings)`"
    assert rows[1]["status"] == "**contended**" and rows[1]["outside CPU load per epoch"] == "2%, 45%"
    assert "ran with cache_clear=every:1" in rows[1]["notes"]  # the record says what ran
    assert rows[2]["notes"].startswith("a fresh run of settings already measured")
    assert rows[0]["ratio to epoch 1 (95% CI)"] == "1.00 (0.90-1.10)"
