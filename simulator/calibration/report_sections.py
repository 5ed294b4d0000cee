"""One section of a markdown report, written in place: from its heading to the next "## "
heading (or the end), so scripts that each own a section can run in any order."""

from __future__ import annotations

from pathlib import Path


def write_section(report: Path, heading: str, text: str) -> None:
    """Replace the section that starts with `heading` by `text` (which starts with it), or
    append it where the report has none."""
    doc = report.read_text()
    at = doc.find(heading)
    if at < 0:
        report.write_text(doc.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    end = doc.find("\n## ", at + len(heading))
    rest = doc[end + 1 :] if end >= 0 else ""
    report.write_text(doc[:at] + text.rstrip() + "\n" + ("\n" + rest if rest else ""))


def publish(report: Path, heading: str, text: str, dry_run: bool) -> None:
    """Print a section; unless `dry_run`, write it into `report` (write_section)."""
    print(text)
    if not dry_run:
        write_section(report, heading, text)
