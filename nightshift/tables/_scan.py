"""One scan over every committed partition of a table (for readers that need the whole history).

A year of nights read one partition at a time costs a directory listing, a dataset discovery
and a file open per night; one hive-partitioned dataset over the table's root reads them all
at once. Staging and trash (`_` names) are invisible to it, as to any other reader.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads

from nightshift.lake import Lake
from nightshift.spec import DS


def lake_history(lake: Lake, table: str, schema: pa.Schema, columns: list[str] | None = None,
                 days: list[str] | None = None) -> pa.Table:
    """All committed partitions of `table` (or only `days`), with `ds` as a string column; empty (with
    `ds`) if none."""
    fields = [schema.field(c) for c in columns] if columns else list(schema)
    full = pa.schema([*fields, pa.field(DS, pa.string())])
    ds = lake.history_dataset(table, schema)
    if ds is None:
        return full.empty_table()
    where = pads.field(DS).isin(days) if days is not None else None
    return ds.to_table(columns=[f.name for f in full], filter=where)
