"""Sphinx extension for the book's build: the copyright line takes its year from the build date.

``_config.yml`` names only the holder (``copyright: "The effnet-tutorial authors"``); this
extension prefixes the year the book is built in, so the footer never shows a stale year.
Sphinx 7.4 has no ``%Y`` substitution in ``copyright`` (that came with Sphinx 8.1). A build with
``SOURCE_DATE_EPOCH`` set (a reproducible build) uses that date's year instead, as Sphinx itself
does for a year written into the line. Loaded through ``sphinx: local_extensions`` in
``_config.yml``; not part of the package.
"""
from __future__ import annotations

import os
import re
import time


def build_year(environ: dict | None = None) -> int:
    """The year of ``SOURCE_DATE_EPOCH`` if set, else the current year (UTC)."""
    environ = os.environ if environ is None else environ
    epoch = environ.get("SOURCE_DATE_EPOCH")
    return time.gmtime(int(epoch) if epoch else None).tm_year


def copyright_line(holder: str, year: int) -> str:
    """``"2026, The effnet-tutorial authors"``; a holder that already starts with a year is an
    error, since that year would go stale."""
    if re.match(r"\s*\d{4}", holder):
        raise ValueError(f"copyright in _config.yml should name the holder only, not a year: {holder!r}")
    return f"{year}, {holder}"


def _set_copyright(app, config) -> None:
    config.copyright = copyright_line(config.copyright, build_year())


def setup(app) -> dict:
    # before Sphinx's own correct_copyright_year (priority 800), which then finds a current year
    app.connect("config-inited", _set_copyright, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
