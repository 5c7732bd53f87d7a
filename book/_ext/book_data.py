"""Sphinx extension: the book's data is there before any notebook runs, or the build stops with one message.

Chapter 2.1 reads Omniglot (Lake et al. 2015, MIT licence). At ``builder-inited`` this fetches every missing
official file into ``$MAPPING_DATA/omniglot`` and checks its md5 (:func:`mapping.data.omniglot_file` with
``download=True``, as the test command does). Where that cannot be done (no network, no write access, a corrupt
download) the build ends at once with a short message that says where to put the files, instead of executing
the notebooks and publishing a traceback.
"""
from __future__ import annotations

from sphinx.errors import ConfigError


def fetch_data(app) -> None:
    from mapping.data.files import URLS, omniglot_file, omniglot_root
    folder = omniglot_root()
    missing = [name for name in URLS if not (folder / name).is_file()]
    for name in missing:
        try:
            omniglot_file(name, download=True)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0][:200]
            raise ConfigError(
                f"the book needs the Omniglot files {', '.join(missing)} in {folder}, and {name} could not be "
                f"downloaded ({reason}). Put the official files there (from Lake's repository, "
                "github.com/brendenlake/omniglot), or set MAPPING_DATA to a folder whose omniglot/ holds them, "
                "and build again.") from None


def setup(app):
    app.connect("builder-inited", fetch_data)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
