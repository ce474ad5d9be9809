"""Data tests: the input contract names the partition, the column and the rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch_scoring.contract import ContractViolation, validate_partition
from nightshift.lake import FEATURES, PREDICTIONS


def good(spec, n=50) -> dict:
    rng = np.random.default_rng(0)
    data = {spec.entity_id: [f"e{i}" for i in range(n)]}
    for c in spec.numeric:
        data[c] = rng.normal(size=n)
    for c in spec.categorical:
        data[c] = [f"{c}_{i % 3}" for i in range(n)]
    return data


def test_good_partition_passes(lake, spec):
    lake.commit(FEATURES, "2026-01-01", pa.table(good(spec)))
    out = validate_partition(lake, spec, "2026-01-01")
    assert out["rows"] == 50 and len(out["fingerprint"]) == 16


BREAKS = [
    ("missing column", lambda d, s: d.pop(s.numeric[3]), "required column present", 3),
    ("null id", lambda d, s: d.__setitem__(s.entity_id, [None] + d[s.entity_id][1:]), "entity id is never null", "id"),
    ("duplicate id", lambda d, s: d[s.entity_id].__setitem__(1, "e0"), "entity id is unique", "id"),
    ("infinite value", lambda d, s: d[s.numeric[0]].__setitem__(4, np.inf), "finite or missing", 0),
    ("string numeric", lambda d, s: d.__setitem__(s.numeric[1], ["x"] * 50), "numeric feature is a number or boolean", 1),
    ("label leaked", lambda d, s: d.__setitem__(s.label, [0] * 50), "features carry no label", "label"),
    ("all missing", lambda d, s: d.__setitem__(s.numeric[2], [np.nan] * 50), "not entirely missing", 2),
]


@pytest.mark.parametrize("name,brk,rule,col", BREAKS, ids=[b[0] for b in BREAKS])
def test_violations_name_partition_column_rule(lake, spec, name, brk, rule, col):
    data = good(spec)
    brk(data, spec)
    lake.commit(FEATURES, "2026-01-02", pa.table(data))
    with pytest.raises(ContractViolation) as err:
        validate_partition(lake, spec, "2026-01-02")
    column = {"id": spec.entity_id, "label": spec.label}.get(col) if isinstance(col, str) else spec.numeric[col]
    msg = str(err.value)
    assert "features/ds=2026-01-02" in msg and rule in msg and repr(column) in msg
    assert not lake.exists(PREDICTIONS, "2026-01-02")


def test_missing_partition_says_what_to_do(lake, spec):
    with pytest.raises(ContractViolation, match="Land the day's features first"):
        validate_partition(lake, spec, "2026-03-01")


def test_empty_partition_is_refused(lake, spec):
    lake.commit(FEATURES, "2026-01-03", pa.table(good(spec)).slice(0, 0))
    with pytest.raises(ContractViolation, match="0 rows"):
        validate_partition(lake, spec, "2026-01-03")


def test_booleans_follow_the_one_type_rule(lake, spec):
    """A boolean is a valid categorical (and numeric) feature here, as in training and the import."""
    data = good(spec)
    data[spec.categorical[0]] = [i % 2 == 0 for i in range(50)]
    data[spec.numeric[0]] = [i % 3 == 0 for i in range(50)]
    lake.commit(FEATURES, "2026-01-01", pa.table(data))
    assert validate_partition(lake, spec, "2026-01-01")["rows"] == 50


# -- duplicate ids are found exactly, in 1 to 2 bytes an id -----------------------------------------
def test_id_keys_equal_for_equal_ids_and_rarely_otherwise():
    from batch_scoring.contract import id_keys

    ids = pa.array([f"2026-01-01-{i:07d}" for i in range(100_000)] + ["", "a" * 500])
    keys = id_keys(ids)
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == len(ids)
    assert (id_keys(ids.slice(500, 10)) == keys[500:510]).all()  # a slice hashes as the whole does
    assert (id_keys(pa.chunked_array([ids.slice(0, 7), ids.slice(7, 3)])) == keys[:10]).all()
    assert id_keys(pa.array(["x1"]))[0] == id_keys(pa.array(["x1"], pa.large_string()))[0]
    assert id_keys(pa.array([3, -1], pa.int32())).tolist() == [3, 2**64 - 1]  # integers are their own key


ID_SETS = [
    ("one length", [f"2026-01-01-{i:07d}" for i in range(5000)]),
    ("a few lengths", [f"c{i}" for i in range(5000)]),
    ("empty and unicode", ["", "a", "ü", "日本", "", "ab"]),
    ("many lengths", [("x" * (i % 40)) + str(i) for i in range(3000)]),
    ("longer than 256 bytes", ["a" * 300, "b" * 299, "a" * 300]),
]


@pytest.mark.parametrize("name,ids", ID_SETS, ids=[n for n, _ in ID_SETS])
def test_the_fast_hash_of_ids_of_a_few_lengths_is_the_byte_by_byte_hash(name, ids, monkeypatch):
    """Ids of a few lengths hash as matrix products; the keys must be the very ones the general path
    computes, or a duplicate split across two batches of different shapes would be missed."""
    import batch_scoring.contract as contract

    arr = pa.array(ids)
    fast = contract.id_keys(arr)
    monkeypatch.setattr(contract, "_FEW_LENGTHS", -1)  # force the byte-by-byte path
    np.testing.assert_array_equal(fast, contract.id_keys(arr))
    assert len(np.unique(fast)) == len(set(ids))
    mixed = pa.chunked_array([arr.slice(0, 3), pa.array(["zz" * 7, *ids[3:]])])  # another batch, another shape
    monkeypatch.setattr(contract, "_FEW_LENGTHS", 16)
    assert contract.id_keys(mixed)[4:].tolist() == fast[3:].tolist()


def test_batches_checked_on_several_threads_add_up_and_find_duplicates_across_them(lake, spec):
    from concurrent.futures import ThreadPoolExecutor

    from batch_scoring.contract import ContractCheck

    data = good(spec, n=4000)
    data[spec.entity_id][3999] = data[spec.entity_id][10]  # the same id in the first and the last batch
    data[spec.numeric[0]] = [None if i % 9 == 0 else 1.0 for i in range(4000)]
    lake.commit(FEATURES, "2026-01-09", pa.table(data))
    check = ContractCheck.open(lake, spec, "2026-01-09")
    batches = list(check.dataset.to_batches(columns=check.columns, batch_size=100))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check.batch, batches))
    assert check.rows == 4000 and check.null_counts[spec.numeric[0]] == len(range(0, 4000, 9))
    with pytest.raises(ContractViolation, match="1 duplicate ids among 4000 rows"):
        check.finish()


SEEN = [
    # (ids in batches, expected rows the bitmap is sized for, duplicates)
    ("none", [[f"a{i}" for i in range(3000)]], 3000, 0),
    ("none, bitmap far too small: every slot shared", [[f"a{i}" for i in range(3000)]], 1, 0),
    ("one within a batch", [["a", "b", "a"]], 3, 1),
    ("one across batches", [["a", "b"], ["c", "a"]], 4, 1),
    ("three of one id, a pair of another", [["x", "y", "x"], ["x", "y", "z"]], 6, 3),
    ("sequential integers", [list(range(0, 5000)), list(range(5000, 10000))], 10000, 0),
    ("integers, one repeated, tiny bitmap", [list(range(0, 5000)), [17, 5000]], 1, 1),
]


@pytest.mark.parametrize("name,batches,expected,dups", SEEN, ids=[s[0] for s in SEEN])
def test_seen_ids_suspects_every_duplicate_and_the_count_is_exact(name, batches, expected, dups):
    from batch_scoring.contract import SeenIds, id_keys

    seen = SeenIds(expected)
    for ids in batches:
        seen.add(id_keys(pa.array(ids)))
    suspects = seen.suspect_slots()
    flat = [i for ids in batches for i in ids]
    flagged = seen.suspected(id_keys(pa.array(flat)))
    assert flagged.tolist() == [slot in set(suspects.tolist()) for slot in seen.slots(id_keys(pa.array(flat)))]
    among = [i for i, f in zip(flat, flagged) if f]
    assert len(among) - len(set(among)) == dups  # what ContractCheck counts from the suspects
    if dups:
        assert len(suspects) > 0
    if expected >= len(flat) and not dups:
        assert len(suspects) <= 0.15 * len(flat)  # false suspects are few when the bitmap is sized right


def test_a_hash_collision_is_never_reported_as_a_duplicate(lake, spec, monkeypatch):
    """A shared key is a suspect: the ids themselves decide, so only true duplicates are refused."""
    import batch_scoring.contract as contract

    real = contract.id_keys
    monkeypatch.setattr(contract, "id_keys", lambda col: real(col) % np.uint64(7))  # collide everything
    data = good(spec, n=60)
    lake.commit(FEATURES, "2026-01-05", pa.table(data))
    assert validate_partition(lake, spec, "2026-01-05")["rows"] == 60
    data[spec.entity_id][7] = data[spec.entity_id][3]
    lake.commit(FEATURES, "2026-01-06", pa.table(data))
    with pytest.raises(ContractViolation, match="1 duplicate ids among 60 rows"):
        validate_partition(lake, spec, "2026-01-06")


def test_integer_ids_are_checked_exactly(lake, spec):
    data = good(spec, n=60)
    data[spec.entity_id] = list(range(60))
    lake.commit(FEATURES, "2026-01-07", pa.table(data))
    assert validate_partition(lake, spec, "2026-01-07")["rows"] == 60
    data[spec.entity_id][59] = 0
    lake.commit(FEATURES, "2026-01-08", pa.table(data))
    with pytest.raises(ContractViolation, match="1 duplicate ids among 60 rows"):
        validate_partition(lake, spec, "2026-01-08")
