"""The one rule for column types: which Arrow types a feature may have, and what a category is.

The import, the input contract, training and scoring all call these functions, so a boolean
or a small integer is treated the same at every step. Numeric features may be integers,
floats, decimals or booleans (read as 0/1). Categorical features may be strings, integers,
booleans or dictionaries of those, and are compared as strings: booleans become
'true'/'false', integers their decimal digits, nulls stay null (the model's OOV row).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def numeric_type_ok(t: pa.DataType) -> bool:
    """A numeric feature may be an integer, float, decimal or boolean (read as 0/1)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def categorical_type_ok(t: pa.DataType) -> bool:
    """A categorical feature may be a string, integer, boolean or dictionary of those."""
    if pa.types.is_dictionary(t):
        return categorical_type_ok(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


def category_strings(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The strings a categorical column's values are compared as: booleans become
    'true'/'false', integers their decimal digits, nulls stay null."""
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type):
        return pc.cast(col, pa.string())
    return pc.cast(col, pa.string())
