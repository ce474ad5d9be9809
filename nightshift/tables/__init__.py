"""The lake's tables, one module each: its schema, its writer and its typed readers.

The policy, the report and the UI read through these modules and nothing else, so a
table's layout is defined in exactly one place. Readers never write.
"""
