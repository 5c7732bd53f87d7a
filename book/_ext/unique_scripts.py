"""Sphinx extension: every inline script appears once per page.

Jupyter Book 1.x registers sphinx-thebe's inline set-up script twice, so every page declares
``const THEBE_JS_URL`` twice and the browser logs ``SyntaxError: Identifier 'THEBE_JS_URL' has already been
declared``. This drops repeated scripts (same file, same inline body) from each page's script list.
"""
from __future__ import annotations


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        filename = getattr(script, "filename", script) or ""  # the same inline script comes as '' and as None
        key = (str(filename), getattr(script, "attributes", {}).get("body", ""))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
