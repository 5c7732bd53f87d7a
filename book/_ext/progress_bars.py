"""Sphinx extension: each text progress bar in a notebook output shows once, in its final state.

``mapping.train`` draws tqdm's text bar on stdout, which needs no JavaScript (a widget bar needs require.js
from a CDN). A terminal or Jupyter redraws the bar in place with ``\\r``; myst-nb's stream merging ends every
message with a newline instead, so a bar updated every second would fill the page with its past states.
This keeps, in every run of consecutive bar lines with the same description, only the last.
"""
from __future__ import annotations

import re

from docutils import nodes

BAR = re.compile(r"^(?P<desc>[^\n|]*?):?\s*\d{1,3}%\|[^|\n]*\|\s*\d+/\d+ \[")  # "desc:  74%|███▍  | 222/300 ["


def collapse_progress(text: str) -> str:
    """``text`` with every run of consecutive progress lines of one bar reduced to its last line."""
    lines, out = text.split("\n"), []
    for line in lines:
        match = BAR.match(line.split("\r")[-1])
        line = line.split("\r")[-1] if match else line
        previous = BAR.match(out[-1]) if out else None
        if match and previous and previous.group("desc") == match.group("desc"):
            out[-1] = line
        else:
            out.append(line)
    return "\n".join(out)


def collapse_in_outputs(app, doctree, docname) -> None:
    for block in doctree.findall(nodes.literal_block):
        text = block.astext()
        if "%|" not in text:
            continue
        collapsed = collapse_progress(text)
        if collapsed != text:
            block.children = [nodes.Text(collapsed)]
            block.rawsource = collapsed


def setup(app):
    app.connect("doctree-resolved", collapse_in_outputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
