"""`nightshift import`: any table (CSV or Parquet, a file, a folder or a URL) into the lake's
landing area, with a spec inferred from it. Every rule is in `importer.core`'s docstring;
`cli/import_command.py` is the command line around it."""

from importer.core import ImportFailed, ImportOptions, import_table, infer_task, render_report

__all__ = ["ImportFailed", "ImportOptions", "import_table", "infer_task", "render_report"]
