"""`ContractViolation`: the one error for data that breaks the lake contract (features or labels).

It lives in the kernel so that the lake's own readers (labels as known on a day) raise the
same error as the input contract in `batch_scoring.contract`. Its message names the
partition, the column and the rule, and says what to do.
"""

from __future__ import annotations


class ContractViolation(ValueError):
    def __init__(self, partition: str, column: str | None, rule: str, detail: str, fix: str):
        self.partition, self.column, self.rule = partition, column, rule
        where = f"{partition}, column {column!r}" if column else partition
        super().__init__(f"{where} breaks rule '{rule}': {detail}. {fix}")
