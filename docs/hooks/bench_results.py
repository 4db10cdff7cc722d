"""MkDocs hook: publish bench/results/ (the reports the bench scripts write) under benchmarks/results/ of the site.

The scripts keep writing where they always did; the site reads the same files, so a report is never copied by hand
and a link to one that is gone fails `mkdocs build --strict`.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

SITE_FOLDER = "benchmarks/results"
SUFFIXES = {".md", ".png", ".json"}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    results = Path(config.config_file_path).parent / "bench" / "results"
    for path in sorted(results.iterdir()):
        if path.suffix in SUFFIXES and path.is_file():
            files.append(File.generated(config, f"{SITE_FOLDER}/{path.name}", abs_src_path=str(path)))
    return files
