"""The built-in ``report`` plugin: what a person reads of a finished run.

It takes part in every run (a core plugin): ``report.md`` with the recovery plot
(:mod:`.markdown`) and the saved model's Hugging Face card, ``model/README.md`` (:mod:`.card`).
The core writes ``report.json`` after it, so a run directory with ``report.json`` also has these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit import files, hookimpl

if TYPE_CHECKING:
    from prunekit.payloads import ReportRequest


@hookimpl
def render_report(request: ReportRequest) -> None:
    """The recovery plot and the card first, so that ``report.md`` links files that exist."""
    from prunekit.plugins.report import card, markdown

    report, directory = request.report, request.output_dir
    found = markdown.recovery_curves(report.recovery)
    if found:
        markdown.plot_curves(found, directory / markdown.RECOVERY_PLOT)
    link = None
    if (directory / "model").is_dir():
        link = card.write_card(report, directory / "model").relative_to(directory).as_posix()
    files.write_text(directory / "report.md", markdown.render_markdown(report, link))
