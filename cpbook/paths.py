"""Where the book's files are: its chapters, its stored results and the data the package ships."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"            # the chapters
RESULTS = BOOK / "results"      # stored results, one folder per kind, each with its SHA256SUMS
DATA = Path(__file__).resolve().parent / "data"   # the authored data sets inside the package
