"""Settings: defaults in code < nightshift.toml < env < run Params."""

from __future__ import annotations

import pytest

from nightshift.settings import load_settings

TOML = """
[dataset]
entity_id = "id"
numeric = ["a", "b"]
categorical = ["c"]
label = "y"

[policy]
drift_k = 2
"""


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "nightshift.toml"
    p.write_text(TOML)
    return p


def test_precedence(cfg, tmp_path):
    s = load_settings(cfg, env={})
    assert s.policy.drift_k == 2  # file beats code default
    assert s.policy.drift_n == 5  # code default
    s = load_settings(cfg, env={"NIGHTSHIFT__POLICY__DRIFT_K": "4", "NIGHTSHIFT_HOME": str(tmp_path / "h")})
    assert s.policy.drift_k == 4  # env beats file
    assert s.lake_uri == str(tmp_path / "h" / "lake")
    assert s.tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert s.with_overrides({"policy.drift_k": 1}).policy.drift_k == 1  # run Params beat env


def test_settings_are_frozen(cfg):
    s = load_settings(cfg, env={})
    with pytest.raises(Exception):
        s.policy.drift_k = 9


def test_errors_name_the_field(cfg):
    with pytest.raises(ValueError, match=r"policy.drift_k"):
        load_settings(cfg, env={"NIGHTSHIFT__POLICY__DRIFT_K": "0"})
    with pytest.raises(ValueError, match=r"training.nope"):
        load_settings(cfg, env={}).with_overrides({"training.nope": 1})


def test_dataset_section_is_required(tmp_path):
    p = tmp_path / "n.toml"
    p.write_text("[policy]\ndrift_k = 2\n")
    with pytest.raises(ValueError, match=r"no \[dataset\] section"):
        load_settings(p, env={})


def test_spec_rejects_reserved_and_duplicate_columns(tmp_path):
    p = tmp_path / "n.toml"
    p.write_text(TOML.replace('numeric = ["a", "b"]', 'numeric = ["a", "ds"]'))
    with pytest.raises(ValueError, match="reserved"):
        load_settings(p, env={})
    p.write_text(TOML.replace('numeric = ["a", "b"]', 'numeric = ["a", "c"]'))
    with pytest.raises(ValueError, match="twice"):
        load_settings(p, env={})


def test_resolved_is_flat_and_complete(cfg):
    r = load_settings(cfg, env={}).resolved()
    assert r["policy.drift_k"] == 2 and r["dataset.entity_id"] == "id" and "gate.margin" in r


def test_repo_config_loads():
    s = load_settings(env={})
    assert len(s.dataset.numeric) == 20 and len(s.dataset.categorical) == 5


def test_run_settings_layers_the_run_param_then_explicit_overrides(monkeypatch, cfg):
    from nightshift.settings import run_settings

    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(cfg))
    assert run_settings(None).policy.drift_k == 2
    s = run_settings({"settings": {"policy.drift_k": 3, "training.init_from": "scratch"}}, training__init_from="warm")
    assert (s.policy.drift_k, s.training.init_from) == (3, "warm")  # explicit override beats the Param
    assert run_settings({"settings": {"training.init_from": "scratch"}}, training__init_from=None).training.init_from == "scratch"


# Where a bad value came from: (how it is given, the message's source)
SOURCES = [
    ("file", lambda cfg, env: cfg.write_text(cfg.read_text().replace("drift_k = 2", "drift_k = 0")), "the settings file"),
    ("env var", lambda cfg, env: env.update(NIGHTSHIFT__POLICY__DRIFT_K="0"), "environment variable NIGHTSHIFT__POLICY__DRIFT_K='0'"),
    ("env var, bad type", lambda cfg, env: env.update(NIGHTSHIFT__POLICY__DRIFT_K="many"),
     "environment variable NIGHTSHIFT__POLICY__DRIFT_K='many'"),
]


@pytest.mark.parametrize("name,give,source", SOURCES, ids=[s[0] for s in SOURCES])
def test_settings_errors_name_where_the_bad_value_came_from(cfg, name, give, source):
    env: dict[str, str] = {}
    give(cfg, env)
    with pytest.raises(ValueError) as err:
        load_settings(cfg, env=env)
    line = next(x for x in str(err.value).splitlines() if "policy.drift_k" in x)
    assert source in line
    if name != "file":
        assert "settings file" not in str(err.value)  # the env value is not blamed on nightshift.toml


def test_env_errors_on_a_file_that_is_fine_name_the_env_var_only(cfg):
    with pytest.raises(ValueError) as err:
        load_settings(cfg, env={"NIGHTSHIFT__SCORING__THRESHOLD": "1.5", "NIGHTSHIFT_LAKE": "/tmp/lake"})  # noqa: S108 - a path only validated, never written
    assert "scoring.threshold" in str(err.value) and "NIGHTSHIFT__SCORING__THRESHOLD='1.5'" in str(err.value)
    assert str(cfg) not in str(err.value)


def test_run_param_errors_name_the_param(monkeypatch, cfg):
    from nightshift.settings import run_settings

    monkeypatch.setenv("NIGHTSHIFT_CONFIG", str(cfg))
    with pytest.raises(ValueError, match=r"policy.drift_k: .*\(from run Param 'settings' \(key 'policy.drift_k'\)\)"):
        run_settings({"settings": {"policy.drift_k": 0}})
    with pytest.raises(ValueError, match=r"training.init_from: .*\(from run Param 'init_from'\)"):
        run_settings(None, training__init_from="bogus")


@pytest.mark.parametrize("uri", ["s3://bucket/lake", "gs://bucket/lake", "abfs://c@a.dfs.core.windows.net/lake"])
def test_an_object_store_lake_is_refused_with_the_posix_backend(cfg, uri):
    """Object stores have no folder rename and no lock: the posix backend would commit half partitions there."""
    with pytest.raises(ValueError) as err:
        load_settings(cfg, env={"NIGHTSHIFT_LAKE": uri})
    msg = str(err.value)
    assert uri in msg and "paths.lake_backend" in msg and "NIGHTSHIFT__PATHS__LAKE_BACKEND=delta" in msg
    assert "NIGHTSHIFT_LAKE" in msg  # where the value came from
    from nightshift.lake import Lake

    with pytest.raises(ValueError, match="paths.lake_backend"):
        Lake(uri)  # a Lake built without settings refuses it too


def test_a_local_lake_is_accepted_by_the_posix_backend(cfg, tmp_path):
    for uri in (str(tmp_path / "lake"), f"file://{tmp_path}/lake"):
        assert load_settings(cfg, env={"NIGHTSHIFT_LAKE": uri}).paths.lake_backend == "posix"


def test_the_delta_backend_takes_a_bucket_or_a_local_lake_and_refuses_a_store_without_its_conditional_writes(cfg):
    env = {"NIGHTSHIFT__PATHS__LAKE_BACKEND": "delta"}
    for uri in ("s3://bucket/lake", "/srv/nightshift/lake"):
        assert load_settings(cfg, env={**env, "NIGHTSHIFT_LAKE": uri}).paths.lake_backend == "delta"
    with pytest.raises(ValueError, match=r"gs://bucket/lake.*no conditional write.*paths.lake"):
        load_settings(cfg, env={**env, "NIGHTSHIFT_LAKE": "gs://bucket/lake"})
    with pytest.raises(ValueError, match=r"paths.lake_backend"):
        load_settings(cfg, env={"NIGHTSHIFT__PATHS__LAKE_BACKEND": "hdfs"})
