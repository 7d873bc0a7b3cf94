"""``clew view --export``: one self-contained HTML file of an iteration (data as JSON, the viewer's CSS/JS inlined).

The data sits in ``<script type="application/json">`` with every ``<``, ``>`` and ``&`` written as a JSON
escape, so no string from an env or a model can close the element. A Content-Security-Policy allows only the
viewer's own inline script (by its sha256), so injected markup could not run script even if it were parsed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from clew.store.run import atomic_write_text
from clew.viz.data import RunData
from clew.viz.records import to_json
from clew.viz.server import STATIC_DIR

_STYLE_TAG = '<link rel="stylesheet" href="/static/app.css">'
_SCRIPT_TAGS = ('<script src="/static/charts.js"></script>', '<script src="/static/app.js"></script>')
_DATA_SLOT = "<!-- clew-data -->"
_CSP_SLOT = "<!-- clew-csp -->"


def bundle(run: RunData, iteration: int) -> dict[str, Any]:
    """Everything the viewer shows for one iteration: the run, its curves, the groups and every episode."""
    return {
        "mode": "export",
        "run": run.name,
        "iteration": iteration,
        "runs": to_json([run.info()]),
        "curves": {run.name: to_json(run.curves())},
        "groups": to_json(run.groups(iteration)),
        "episodes": {str(e): to_json(run.episode(iteration, e)) for e in run.episode_ids(iteration)},
    }


def embed_json(data: Any) -> str:
    """JSON text safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` characters at all)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: dict[str, Any]) -> str:
    """The viewer's page with its CSS and JS inlined and ``data`` embedded."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    script = "\n".join((STATIC_DIR / name).read_text(encoding="utf-8") for name in ("charts.js", "app.js"))
    if "</script" in script.lower():
        raise ValueError("the viewer's script cannot be inlined: it contains '</script'")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    page = page.replace(_CSP_SLOT, f'<meta http-equiv="Content-Security-Policy" content="{csp}">')
    page = page.replace(_STYLE_TAG, "<style>\n" + (STATIC_DIR / "app.css").read_text(encoding="utf-8") + "</style>")
    page = page.replace(_SCRIPT_TAGS[0], "").replace(_SCRIPT_TAGS[1], f"<script>{script}</script>")
    data_tag = f'<script type="application/json" id="clew-data">{embed_json(data)}</script>'
    return page.replace(_DATA_SLOT, data_tag)


def export_html(run_dir: Path, iteration: int, out: Path) -> Path:
    """Write the self-contained page of ``iteration`` of the run in ``run_dir`` to ``out``."""
    run = RunData(Path(run_dir).resolve().name, Path(run_dir))
    atomic_write_text(Path(out), render(bundle(run, iteration)))
    return Path(out)
