"""The symbol page's Content-Security-Policy and its vendored charting library agree."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from enrichctl.web import page as webpage

VENDOR = Path(webpage.__file__).parent / "static" / "vendor"


def test_the_symbol_pages_csp_allows_exactly_the_charting_librarys_style_element() -> None:
    """The vendored library inserts one fixed <style> text; the page's CSP names its hash. A new
    library version with another text must come with a new hash (the browser test would show the
    CSP violation; this says which hash)."""
    script = (VENDOR / "lightweight-charts.standalone.production.js").read_text()
    styles = re.findall(r'createElement\("style"\),this\.\w+\.innerText="([^"]*)"', script)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert webpage.CHART_STYLE_HASH == f"'sha256-{digest}'"
    assert webpage.CHART_STYLE_HASH in webpage.SYMBOL_PAGE_CSP
    assert "unsafe-inline" not in webpage.SYMBOL_PAGE_CSP
