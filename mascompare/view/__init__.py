"""The transcript viewer: one HTML file that shows a comparison, its questions and every agent call.

`write(comparison, out_dir)` writes view.html; `records.read_run` is what it reads of a run folder.
"""

from mascompare.view.page import VIEW_FILE, write

__all__ = ["VIEW_FILE", "write"]
