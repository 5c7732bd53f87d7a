"""Sphinx extension: the bibliography's labels read like the citations in the text, "Finn et al., 2017".

The book cites author-year (``bibtex_reference_style: author_year``), but pybtex's default formatting style
labels the bibliography alphabetically ("[FAL17]"), so a reader cannot match the two. This registers a pybtex
label style that writes "Surname, year", "Surname and Surname, year" or "Surname et al., year" (with a, b, ...
where two works would share a label) and a formatting style ``authoryear`` that uses it and sorts by author
and year; ``_config.yml`` selects it with ``bibtex_default_style``.
"""
from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(person.last_names).replace("{", "").replace("}", "")


def author_year(entry) -> str:
    """``Surname, year`` / ``Surname and Surname, year`` / ``Surname et al., year``."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    if not people:
        names = entry.fields.get("title", entry.key).replace("{", "").replace("}", "")
    elif len(people) == 1:
        names = _surname(people[0])
    elif len(people) == 2:
        names = f"{_surname(people[0])} and {_surname(people[1])}"
    else:
        names = f"{_surname(people[0])} et al."
    return f"{names}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        total, seen = Counter(labels), Counter()
        for label in labels:
            seen[label] += 1
            yield label if total[label] == 1 else f"{label}{'abcdefghijklmnopqrstuvwxyz'[seen[label] - 1]}"


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "authoryear"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
