"""Typed, frozen settings: defaults in code, then `nightshift.toml`, then env, then run Params.

Each concern has its own settings object. `load_settings()` resolves them once;
`Settings.resolved()` is the flat dict that every run logs, so a result can always be
traced back to the exact configuration that produced it.

Env overrides:
- `NIGHTSHIFT_HOME`: the folder that holds the lake, the MLflow store and the Airflow home.
- `NIGHTSHIFT_CONFIG`: the path of `nightshift.toml`. Default: `$NIGHTSHIFT_HOME/nightshift.toml`
  when it exists (where `nightshift import` writes your dataset's spec), else the repo root's
  (the demo's simulated world).
- `NIGHTSHIFT_LAKE`: the lake URI (any pyarrow filesystem URI or local path).
- `MLFLOW_TRACKING_URI`: the MLflow tracking store.
- `NIGHTSHIFT__SECTION__KEY=value`: any other field, e.g. `NIGHTSHIFT__POLICY__COOLDOWN_DAYS=3`.

An invalid value is reported with where it came from: the settings file (its path), the
environment variable (its name and value) or the run Param, so the fix is made in the right place.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nightshift.choices import Architecture, InitFrom, ModelSelection, WindowKind
from nightshift.spec import DatasetSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
_BUILDER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class PathSettings(BaseModel):
    model_config = _FROZEN

    home: str = Field(str(REPO_ROOT / ".nightshift"), description="the folder that holds the lake, the MLflow store "
                      "and the Airflow home (env NIGHTSHIFT_HOME); default: .nightshift/ in the repo")
    lake: str = ""  # default: <home>/lake
    lake_backend: Literal["posix", "delta"] = Field("posix", description="how the lake commits a partition: 'posix' "
                                                    "(Hive-partitioned Parquet swapped in by rename(2), serialised by "
                                                    "flock: a local or mounted POSIX disk only) or 'delta' (Delta Lake "
                                                    "through delta-rs: conditional puts, any disk or bucket)")
    mlflow_tracking_uri: str = ""  # default: sqlite:///<home>/mlflow.db
    mlflow_artifact_root: str = ""  # default: <home>/mlartifacts
    mlflow_experiment: str = "nightshift"
    mlflow_timeout_s: float = Field(60, gt=0, le=3600, description="give up on an unreachable MLflow after this many "
                                    "seconds in total, retries included")

    @model_validator(mode="after")
    def _lake_commits_safely(self) -> "PathSettings":
        refusal = lake_refusal(self.lake, self.lake_backend)
        if refusal:
            raise ValueError(refusal)
        return self


# What the POSIX backend needs: rename(2) of a folder and flock(2). Only a local (or mounted) filesystem has both.
_POSIX_SCHEMES = ("", "file")
# Where the delta backend's own conditional writes (alias seq claims, the lake's lease lock) are implemented.
_DELTA_SCHEMES = ("", "file", "s3")


def lake_scheme(uri: str) -> str:
    """The URI scheme of a lake ('' for a plain local path)."""
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def lake_refusal(uri: str, backend: str) -> str | None:
    """Why `backend` cannot commit to the lake at `uri` safely, with the way out; None when it can."""
    if backend == "posix" and lake_scheme(uri) not in _POSIX_SCHEMES:
        return (f"the lake {uri!r} is on an object store ({lake_scheme(uri)}://), where the posix lake backend cannot "
                "commit a partition atomically (no rename of a folder, no lock): set paths.lake_backend = \"delta\" "
                "(env NIGHTSHIFT__PATHS__LAKE_BACKEND=delta) to keep it there as Delta tables, or point paths.lake "
                "(NIGHTSHIFT_LAKE) at a local folder")
    if backend == "delta" and lake_scheme(uri) not in _DELTA_SCHEMES:
        return (f"the lake {uri!r} is on {lake_scheme(uri)}://, where the delta lake backend has no conditional write "
                "of its own yet (it claims alias seqs and takes the lake's lock by an S3 PUT with If-None-Match): "
                "point paths.lake (NIGHTSHIFT_LAKE) at an s3:// bucket (AWS S3 or an S3-compatible store such as "
                "MinIO) or a local folder")
    return None


class ModelSettings(BaseModel):
    model_config = _FROZEN

    name: str = "nightshift-model"  # the MLflow registered model name
    architecture: str = Field("tabularnet", description="the network a scratch retrain builds: a built-in ('tabularnet', "
                              "'ft_transformer') or your own 'package.module:build' (docs/guide/your-model.md)")
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the builder as spec.params; for "
                                   "tabularnet they override hidden, embedding_dim and dropout below")
    allow_code_drift: bool = Field(False, description="score and promote a bundle whose model code's source hash differs "
                                   "from the installed code (logged); off: refused, naming both hashes")
    hidden: tuple[int, ...] = (128, 64)
    embedding_dim: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        # The form only: importing the user's module (and torch) is the retrain's job, before it trains.
        if value not in {a.value for a in Architecture} and not _BUILDER_PATH.match(value):
            raise ValueError(f"{value!r} is neither a built-in ({', '.join(a.value for a in Architecture)}) nor an "
                             "import path of the form 'package.module:build'")
        return value

    @property
    def effective_params(self) -> dict[str, Any]:
        """What the builder gets: for tabularnet, hidden/embedding_dim/dropout under `params`."""
        if self.architecture == "tabularnet":
            return {"embedding_dim": self.embedding_dim, "hidden": list(self.hidden), "dropout": self.dropout, **self.params}
        return dict(self.params)


class TrainingSettings(BaseModel):
    model_config = _FROZEN

    init_from: InitFrom = InitFrom.WARM
    window: WindowKind = WindowKind.SLIDING
    window_days: int = Field(21, ge=1, description="sliding: how many prediction days back")
    window_start: str | None = Field(None, description="fixed/expanding: first prediction day")
    window_end: str | None = Field(None, description="fixed: last prediction day")
    window_min_rows: int = Field(20_000, ge=0, description="sliding: reach further back, day by day, until the window holds this many labelled rows")
    window_max_days: int = Field(365, ge=1, description="sliding: never reach further back than this")
    holdout_days: int = Field(3, ge=1, description="at least this many newest labelled prediction days are held out for the gate")
    holdout_max_days: int = Field(14, ge=1, description="the holdout grows over older days until it holds what the gate needs, up to this many")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU (logged, and "
                                                   "the MLflow run tagged nightshift.cpu_fallback)")
    require_gpu: bool = Field(False, description="fail instead of training on CPU when no CUDA device is found")
    reference_size: int = Field(10000, ge=100, description="rows of the training window saved as drift reference (large beside drift.sample_size, so nights tested against it are nearly independent)")
    min_train_rows: int = Field(500, ge=1, description="a window with fewer labelled rows is deferred, with a record "
                                "that names its days and counts")
    transfer_from: str | None = Field(None, description="init_from=transfer: the source model, 'VERSION' of this registered "
                                      "model or 'NAME:VERSION' of another; None: the champion")
    freeze_epochs: int = Field(3, ge=0, description="init_from=transfer: epochs that train the new head on a frozen backbone")
    unfreeze_lr_factor: float = Field(0.1, ge=0, description="init_from=transfer: after the frozen epochs, the backbone and "
                                      "embeddings train at lr times this; 0 keeps them frozen")
    valid_share: float = Field(0.15, ge=0, lt=0.5, description="share of the training rows held out for early stopping and the "
                               "tournament: a hash half of the newest prediction days' rows (time-based); 0: none")
    valid_onset_min_rows: int = Field(500, ge=1, description="a retrain that knows the drift onset validates only on days "
                                      "since it, when their validation holds this many rows (binary: and 20 of each class)")
    refit_epochs: Literal["best", "all"] = Field("all", description="the tournament's winner is refitted on the whole window "
                                                 "for its best epoch count on validation ('best') or for training.epochs ('all')")
    early_stop_patience: int = Field(2, ge=0, description="stop after this many epochs without a better validation loss, "
                                     "keeping the best epoch's weights; 0: never stop early")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (smoke runs)")
    compile: bool = Field(False, description="torch.compile the model on CUDA (pays on large windows)")
    recent_weight: float = Field(2.0, ge=1, description="window=recent: sampling weight of a post-onset row over a pre-onset one "
                                 "(in the recovery benchmark 2 beat 4 on 3 seeds of 3, and 16 was worse still)")
    representative_days: int = Field(3, ge=1, description="window=representative: the newest days production is taken to look like")
    representative_max_weight: float = Field(10.0, gt=1, description="window=representative: importance weights are clipped to this")
    candidates: tuple[str, ...] = Field((), description="the tournament: 'init_from:window' pairs, each trained, the best on "
                                        "validation becomes the challenger; empty: just init_from:window (or drift_candidates)")
    drift_candidates: tuple[str, ...] = Field(("warm:sliding", "warm:recent", "scratch:recent"), description="the tournament "
                                              "of a drift-triggered retrain when candidates is empty; () for none")

    @field_validator("candidates", "drift_candidates")
    @classmethod
    def _candidates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        inits, windows = {i.value for i in InitFrom}, {w.value for w in WindowKind}
        for c in value:
            init, _, window = c.partition(":")
            if init not in inits or window not in windows:
                raise ValueError(f"candidate {c!r} must be 'init_from:window' with init_from one of {sorted(inits)} "
                                 f"and window one of {sorted(windows)}, e.g. 'warm:recent'")
        if len(set(value)) != len(value):
            raise ValueError(f"candidates {list(value)} name one candidate twice")
        return value


class ScoringSettings(BaseModel):
    model_config = _FROZEN

    batch_rows: int = Field(32_768, ge=1, description="rows per streamed record batch: fewer rows in flight keep "
                            "peak memory flat from 1M to 10M rows a day (measured: 65,536 grew 24-34%, 32,768 12-18%)")
    threshold: float | Literal["value"] = Field(
        0.5, description="binary: score at or above which the decision is 1; \"value\": each model version decides at "
        "the threshold that maximised business value ([value] cost matrix) on its holdout, recorded on the version")

    model: ModelSelection = ModelSelection.AS_OF
    group_mb: float = Field(256, gt=0, description="a day's files are scored in groups of about this many MiB: "
                                                 "one mapped Airflow task per group")
    max_groups: int = Field(32, ge=1, le=1024, description="at most this many scoring groups a day")
    threads: int = Field(0, ge=0, le=64, description="record batches a scoring process computes at once "
                         "(0: one per core it may use, at most 4)")

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_form(cls, v: Any) -> Any:
        if v == "value":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"scoring.threshold must be a number strictly between 0 and 1, or \"value\" (the threshold "
                             f"that maximises the [value] cost matrix on each version's holdout), got {v!r}")
        return float(v)


class DriftSettings(BaseModel):
    model_config = _FROZEN

    p_val: float = Field(0.05, gt=0, lt=1, description="FDR level across the night's tests")
    sample_size: int = Field(2000, ge=50, description="fixed rows drawn from each day, so power does not grow with volume")
    min_effect_numeric: float = Field(0.1, ge=0, description="KS distance a drifted numeric feature must reach (the floor "
                                      "is raised to the statistic's noise level at the night's sample sizes)")
    min_effect_categorical: float = Field(0.1, ge=0, description="total variation distance for a categorical feature "
                                          "(raised to its noise level, likewise)")
    min_unseen_share: float = Field(0.01, ge=0, le=1, description="share of a day's rows in categories the reference "
                                    "never saw that counts as drift (raised to the share expected by chance)")
    mean_test: bool = Field(True, description="Hotelling's T² on the numeric features' means, all at once, beside "
                            "the per-feature tests and MMD")
    min_effect_mean: float = Field(0.2, ge=0, description="Mahalanobis distance (in reference sd) between the means "
                                   "that a mean shift must reach (raised to its noise level at the night's sample sizes)")
    mmd_sample_size: int = Field(500, ge=0, description="rows of the reference and of the day in the multivariate MMD "
                                 "test (0: no MMD test)")
    mmd_permutations: int = Field(200, ge=10, description="permutations of the MMD test (its smallest p-value is 1/(B+1); "
                                  "each costs about 1.6 ms at 500 + 500 rows)")
    min_effect_mmd: float = Field(0.0, ge=0, description="MMD^2 a multivariate drift must reach (raised to the permutation "
                                  "null's quantile)")
    false_alarms_per_100_nights: float = Field(0.5, gt=0, le=50, description="target rate of false alarm episodes: sets "
                                               "the CUSUM's decision interval h")
    cusum_k: float = Field(0.5, gt=0, le=5, description="the CUSUM's reference value, in z units: evidence below it "
                           "drains the sum")
    quiet_nights_to_end: int = Field(2, ge=1, description="an alarm episode ends after this many nights in a row "
                                     "with no drifted test")
    reference: Literal["training_window", "baseline"] = Field("training_window", description="what a night is tested "
                                                              "against: the champion's training window (is the model's "
                                                              "world still the one it learned?) or a fixed baseline "
                                                              "period (has the data moved since then?)")
    baseline_start: str | None = Field(None, description="first day of the baseline period (reference = 'baseline')")
    baseline_end: str | None = Field(None, description="last day of the baseline period (reference = 'baseline')")
    detectors: tuple[str, ...] | None = Field(None, description="the drift detectors to run, by registry name "
                                              "(monitoring/detectors: tabular, unseen, mean, mmd, class_mix, output, psi); "
                                              "None: every registered one. Names are checked against the registry "
                                              "when a night is tested")

    @field_validator("detectors")
    @classmethod
    def _detectors_listed(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        # The form only: the names are checked against monitoring.detectors.REGISTRY by the monitoring
        # itself, since the kernel imports nothing above it.
        if v is None:
            return v
        if not v:
            raise ValueError("drift.detectors is empty: list at least one detector, or leave it out to run them all")
        twice = sorted({n for n in v if v.count(n) > 1})
        if twice:
            raise ValueError(f"drift.detectors names {', '.join(twice)} more than once: list each detector once")
        return v

    @model_validator(mode="after")
    def _baseline_named(self) -> "DriftSettings":
        if self.reference == "baseline":
            if not (self.baseline_start and self.baseline_end):
                raise ValueError("drift.reference = 'baseline' needs drift.baseline_start and drift.baseline_end "
                                 "(YYYY-MM-DD): the period whose data is the reference")
            if self.baseline_start > self.baseline_end:
                raise ValueError(f"drift.baseline_start {self.baseline_start} is after drift.baseline_end "
                                 f"{self.baseline_end}")
        return self


class PolicySettings(BaseModel):
    model_config = _FROZEN

    drift_k: int = Field(3, ge=1, description="retrain when k of the last n days drifted")
    drift_n: int = Field(5, ge=1, description="the nights with data that drift_k counts over")
    drift_cusum_retrains_per_200_nights: float | None = Field(
        0.1, gt=0, le=50, description="drift CUSUM: retrain when the drift alarm's CUSUM reaches an interval that noise "
        "alone would cross this many times per 200 quiet nights (0.1: h 5.75 at the alarm's k 0.5, against the alarm's own "
        "3.49), so a change too large to be noise decides on the night it shows instead of after k of n nights; the "
        "retrain then waits for the new regime's labels, and is withdrawn if the alarm episode ends first. None: off")
    drift_confirm_nights: int = Field(3, ge=1, le=30, description="a retrain decided on drift alone (drift persisted, "
                                      "drift CUSUM, alarm with an estimated drop) starts only once the drift alarm has "
                                      "been on this many nights in a row (at most drift_n are seen): a one-night glitch "
                                      "ends its episode sooner (drift.quiet_nights_to_end) and its wait is withdrawn. "
                                      "1: no confirmation")
    metric_floor: float | None = Field(None, description="retrain when a matured day's realized primary metric (or tonight's "
                                       "estimate) is worse than this, in the metric's direction; None: the task's default "
                                       "(AUC 0.70; none for RMSE, whose scale is the target's)")
    max_model_age_days: int = Field(180, ge=1, description="counted in days that had data, not calendar days; a backstop, "
                                    "not a schedule: the metric signals retrain a model that goes stale")
    cooldown_days: int = Field(5, ge=0, description="no automatic retrain within this many days with data of the last one")
    window_days: int = Field(7, ge=1, description="ground truth: the rolling window, in prediction days, whose rows are "
                             "pooled for the realized and estimated metrics (pooled rows, not a mean of daily metrics)")
    signal_min_coverage: float = Field(0.5, gt=0, le=1, description="a prediction day feeds the realized-drop window once "
                                       "this share of its rows is labelled (or it has matured), as known on the night")
    drop_margin: float | None = Field(None, ge=0, description="retrain when the pooled realized (or estimated) primary "
                                      "metric is worse than the champion's holdout reference by more than this plus "
                                      "drop_z standard errors, in the task's gain unit; None: the task's default "
                                      "(0.02 AUC points; 0.05, i.e. 5% of RMSE)")
    drop_z: float = Field(3.0, ge=0, description="standard errors (window and reference combined) a drop must clear "
                          "beyond drop_margin, and a metric beyond its floor: keeps the signals quiet at any volume")
    change_days: int = Field(7, ge=0, description="realized change: the last this many prediction days with enough labels "
                             "are each tried as the onset of a drop, against the holdout reference pooled with the "
                             "champion's own earlier days; 0: off")
    change_z: float = Field(3.0, gt=0, description="realized change: standard errors the drop must clear (and drop_margin "
                            "itself); calibrated for the looks (change_days onsets a night, every night) to the quiet "
                            "target of 1 retrain per 200 nights")
    persist_z: float | None = Field(1.645, ge=0, description="realized drop, realized change, estimated drop: the drop must last; "
                                    "the days pooled without the worst of them must also be worse by this many standard "
                                    "errors (1.645: significant at 5% on their own), so it needs two days with enough "
                                    "labels, and one day that wrecked a night's predictions is not a change. None: off")
    alarm_drop_z: float | None = Field(2.0, gt=0, description="alarm with an estimated drop: on a night the drift alarm "
                                       "is on, retrain when tonight's estimate is worse than the holdout reference's "
                                       "estimate by more than alarm_drop_margin and this many standard errors (the alarm "
                                       "is the other half of the evidence, so 2 is enough). It decides before any "
                                       "post-drift label exists, so the retrain then waits for them (onset_min_labels). "
                                       "None: off")
    alarm_drop_margin: float | None = Field(None, ge=0, description="alarm with an estimated drop: the smallest estimated "
                                            "loss that counts, in the task's gain unit; None: half the drop margin "
                                            "(0.01 AUC points; 2.5% of RMSE, though regression is not estimated)")
    onset_min_labels: int = Field(15_000, ge=0, description="a retrain decided while a drift onset is known waits (verdict "
                                  "WAIT, no cooldown) until the prediction days since the onset hold this many labelled "
                                  "rows, so the challenger learns the new regime and the gate judges it there (on half of "
                                  "them: 7,500 rows resolve a gain of about 0.006 AUC). In the recovery benchmark (4,000 "
                                  "rows a day) that is the 6th night after the onset and brings the challenger within "
                                  "0.03 of an oracle; 2,000 (the 2nd night) left it 0.06 short. 0: never wait")
    max_wait_days: int = Field(7, ge=0, description="a waiting retrain starts after this many days with data, with the "
                               "labels there are (at a few hundred rows a day the count is out of reach)")
    recalibrate_days: int = Field(7, ge=0, description="ground truth: each day's estimate uses a Platt calibrator refitted "
                                  "on the labels arrived for the prediction days just before it (same model version), "
                                  "at most this many days back, not the bundle's holdout calibrator; 0: the bundle's only")
    recalibrate_rows: int = Field(5000, ge=50, description="the refit reaches back a day at a time, newest first, until it "
                                  "holds this many labelled rows (or recalibrate_days)")
    recalibrate_min_rows: int = Field(500, ge=50, description="labelled rows the refit needs (and 5 of each class); "
                                      "fewer: the bundle's calibrator")


class GateSettings(BaseModel):
    model_config = _FROZEN

    metric: Literal["task", "value"] = Field("task", description="what decides: the task's primary metric (AUC, RMSE, "
                                             "macro AUC) or \"value\", the business value per row of the [value] cost "
                                             "matrix (then gate.margin and gate.min_gain are in value per row). The "
                                             "value gain is shown beside the metric's either way when a cost matrix is set")
    n_boot: int = Field(1000, ge=100, description="bootstrap resamples of the paired gain")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the gain's confidence interval (and of the "
                              "power check's minimum detectable gain)")
    margin: float | None = Field(None, ge=0, description="non-inferiority margin, in the task's gain unit; None: the "
                                 "task's default (0.005 AUC points; 0.02, i.e. 2% of RMSE)")
    min_gain: float = Field(0.0, ge=0, description="superiority: the challenger replaces a champion that is not known stale "
                            "only when the CI's lower bound on its gain, in the task's gain unit, is above this")
    max_churn: float | None = Field(None, gt=0, description="largest change a swap may cause on the holdout: the share of "
                                    "decisions that flip (binary, at scoring.threshold), or the mean absolute change of the "
                                    "prediction (regression); None: recorded, not capped")
    min_rows: int = Field(500, ge=1, description="minimum holdout rows (binary: and at least 20 of each class)")
    segment_margin: float | None = Field(None, ge=0, description="largest loss, in the gain unit, allowed in any segment; "
                                         "None: the task's default (0.03 AUC points; 0.10 of RMSE)")
    min_segment_rows: int = Field(200, ge=1, description="a segment value with fewer holdout rows is not judged "
                                  "against segment_margin")
    first_model_floor: float | None = Field(None, description="absolute bar for the very first champion; None: the task's "
                                            "default (AUC >= 0.65; R2 >= 0)")
    power_check: bool = Field(True, description="before training, defer a retrain whose holdout cannot resolve the margin")
    assumed_correlation: float = Field(0.9, ge=0, lt=1, description="power check: assumed correlation of champion and "
                                       "challenger metric estimates across resamples (pairing shrinks the delta's error)")
    onset_aware: bool = Field(True, description="a retrain that knows the drift onset judges the challenger, and fits its "
                              "calibrator and reference, on the holdout's rows from the onset on, when they hold gate.min_rows "
                              "(binary: and 20 of each class); otherwise on the whole holdout, and the verdict says so")
    onset_needs_power: bool = Field(False, description="onset_aware: judge on the rows since the onset only when they can also "
                                    "resolve the margin (gate.power_check); off: judge on them anyway and do not defer for "
                                    "power, since a whole holdout of mostly older days would judge a world production has left")
    mode: str = Field("offline", description="'offline': a challenger the gate passes on the holdout is promoted at "
                      "once; 'shadow:N': it becomes the `candidate` instead, scores the next N nights into shadow/ beside "
                      "the champion, and is promoted only if the gate, run again (same rules) on those nights' matured "
                      "labels, says PROMOTE")
    seed: int = 0

    @field_validator("mode")
    @classmethod
    def _mode_form(cls, value: str) -> str:
        if shadow_nights(value) is None and value != "offline":
            raise ValueError(f"{value!r} is not a gate mode: use 'offline' (promote on the holdout's verdict) or "
                             f"'shadow:N' with N a whole number of nights from 1 to {MAX_SHADOW_NIGHTS} (e.g. "
                             "'shadow:7': the challenger scores 7 nights beside the champion before the gate judges it "
                             "again on their matured labels)")
        return value

    @property
    def shadow_nights(self) -> int | None:
        """N of `mode = "shadow:N"`; None in offline mode."""
        return shadow_nights(self.mode)


MAX_SHADOW_NIGHTS = 60
_SHADOW = re.compile(r"^shadow:([0-9]+)$")


def shadow_nights(mode: str) -> int | None:
    """N of a `gate.mode` of the form 'shadow:N' (1 <= N <= MAX_SHADOW_NIGHTS), else None."""
    m = _SHADOW.match(mode or "")
    n = int(m.group(1)) if m else 0
    return n if 1 <= n <= MAX_SHADOW_NIGHTS else None


_VALUE_WHAT = {"tp": "the value of a true positive: a positive decided positive", "fp": "the value of a false positive: "
               "a negative decided positive (a cost: negative)", "fn": "the value of a false negative: a positive "
               "decided negative (a cost: negative)", "tn": "the value of a true negative: a negative decided negative",
               "over": "the cost of one unit of over-prediction (prediction above the label)", "under": "the cost of one "
               "unit of under-prediction (prediction below the label)", "per_unit": "the cost of one unit of error either "
               "way: sets over and under"}


class ValueSettings(BaseModel):
    """The cost matrix that puts monitoring, the estimate and the gate in the business's units (`nightshift.value`).

    Binary: `tp`, `fp`, `fn`, `tn`, all four, each the value of one row in that cell at the decision threshold
    (positive: earned; negative: a cost). Regression: `over` and `under` (or `per_unit` for both), the cost of one
    unit of error. Nothing set: no value anywhere, everything as without it. Checked against `dataset.task` when the
    settings load: a missing or non-numeric entry is named there, not on the first night.
    """
    model_config = _FROZEN

    tp: float | None = Field(None, description=_VALUE_WHAT["tp"])
    fp: float | None = Field(None, description=_VALUE_WHAT["fp"])
    fn: float | None = Field(None, description=_VALUE_WHAT["fn"])
    tn: float | None = Field(None, description=_VALUE_WHAT["tn"])
    over: float | None = Field(None, ge=0, description=_VALUE_WHAT["over"])
    under: float | None = Field(None, ge=0, description=_VALUE_WHAT["under"])
    per_unit: float | None = Field(None, ge=0, description=_VALUE_WHAT["per_unit"])
    currency: str = Field("", max_length=16, description="the unit shown beside values (e.g. \"EUR\"); empty: none")

    @field_validator("tp", "fp", "fn", "tn", "over", "under", "per_unit", mode="before")
    @classmethod
    def _number(cls, v: Any, info: Any) -> Any:
        """A finite number (TOML's 10 or -2.5), not text or true/false; None: not set."""
        key = info.field_name
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"value.{key} must be a number ({_VALUE_WHAT[key]}), got {v!r}: write it without quotes, "
                             f"e.g. {key} = {'-2.5' if key in ('fp', 'fn') else '2.5'}")
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"value.{key} must be a finite number ({_VALUE_WHAT[key]}), got {v!r}")
        return float(v)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, k) is not None for k in _VALUE_WHAT)

    def costs(self) -> dict[str, float]:
        """The entries set, with `per_unit` spelled out as over and under."""
        out = {k: getattr(self, k) for k in ("tp", "fp", "fn", "tn", "over", "under") if getattr(self, k) is not None}
        if self.per_unit is not None:
            out.update(over=self.per_unit, under=self.per_unit)
        return out

    def problem(self, task_name: str, keys: tuple[str, ...]) -> tuple[str, str] | None:
        """(the key, what is wrong and how to fix it) for a cost matrix that does not fit the task; None when it does."""
        if not self.enabled:
            return None
        given = [k for k in _VALUE_WHAT if getattr(self, k) is not None]
        if not keys:
            return ("value", f"dataset.task is {task_name}, which has no cost matrix (business value is defined for "
                             f"binary: value.tp, fp, fn, tn; and regression: value.over, value.under): remove "
                             f"{', '.join('value.' + k for k in given)}")
        if self.per_unit is not None and (self.over is not None or self.under is not None):
            return ("value.per_unit", "value.per_unit sets both value.over and value.under: give per_unit alone, or "
                                      "over and under")
        have = self.costs()
        foreign = [k for k in given if k not in keys and not (k == "per_unit" and "over" in keys)]
        if foreign:
            return (f"value.{foreign[0]}", f"{', '.join('value.' + k for k in foreign)} {'is' if len(foreign) == 1 else 'are'} "
                    f"not part of a {task_name} cost matrix, which takes {', '.join('value.' + k for k in keys)}")
        missing = [k for k in keys if k not in have]
        if missing:
            return (f"value.{missing[0]}", f"the {task_name} cost matrix needs all of {', '.join('value.' + k for k in keys)}; "
                    f"missing: {', '.join('value.' + k for k in missing)}. Set "
                    + "; ".join(f"value.{k} ({_VALUE_WHAT[k]})" for k in missing))
        return None


class SettingError(ValueError):
    """A rule across sections, raised against the one key the fix goes in (so the error names it and its source)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class UISettings(BaseModel):
    model_config = _FROZEN

    airflow_url: str = Field("", description="the Airflow web UI's base URL, for links in alerts; default: "
                             "$AIRFLOW__API__BASE_URL, else http://127.0.0.1:8080")
    mlflow_url: str = Field("", description="the MLflow UI's base URL, for links to runs and model versions; "
                            "empty: the tracking URI when it is http(s), else no MLflow links")


class AlertSettings(BaseModel):
    model_config = _FROZEN

    channels: tuple[Literal["log", "email", "webhook"], ...] = Field(
        ("log",), description="where alerts go; the default only logs, so nothing is sent unasked")
    email_to: tuple[str, ...] = Field((), description="email: the recipients")
    email_from: str | None = Field(None, description="email: the sender (default: the SMTP connection's)")
    smtp_conn_id: str = Field("smtp_default", description="email: the Airflow connection of the SMTP server")
    webhook_url: str = Field("", description="webhook: a URL that takes a JSON POST (Slack-style `text` included)")
    webhook_timeout_s: float = Field(10, gt=0)


class Settings(BaseModel):
    model_config = _FROZEN

    paths: PathSettings = PathSettings()
    dataset: DatasetSpec
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    scoring: ScoringSettings = ScoringSettings()
    drift: DriftSettings = DriftSettings()
    policy: PolicySettings = PolicySettings()
    gate: GateSettings = GateSettings()
    value: ValueSettings = ValueSettings()
    ui: UISettings = UISettings()
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="after")
    def _value_fits(self) -> "Settings":
        from nightshift.task import task_for

        task = task_for(self.dataset.task)
        if (problem := self.value.problem(task.name.value, task.value_keys)) is not None:
            raise SettingError(*problem)
        if self.scoring.threshold == "value":
            if "tp" not in task.value_keys:
                raise SettingError("scoring.threshold", f"scoring.threshold = \"value\" picks a binary decision threshold; "
                                   f"dataset.task is {task.name.value}, which has none: remove it")
            if not self.value.enabled:
                raise SettingError("scoring.threshold", "scoring.threshold = \"value\" maximises business value: set the "
                                   "cost matrix value.tp, value.fp, value.fn, value.tn, or give a number (e.g. 0.5)")
        if self.gate.metric == "value":
            if not self.value.enabled:
                raise SettingError("gate.metric", "gate.metric = \"value\" judges on business value: set the [value] cost "
                                   "matrix, or leave gate.metric = \"task\"")
            if self.gate.margin is None:
                raise SettingError("gate.margin", "gate.metric = \"value\" needs gate.margin in value per row (the largest "
                                   "loss of value per row a swap may risk, e.g. 0.01): the task's default margin is in "
                                   f"{task.gain_unit}, not in value")
        return self

    def value_model(self):
        """The business-value model of the cost matrix (`nightshift.value`), or None when none is set."""
        if not self.value.enabled:
            return None
        from nightshift.task import task_for

        return task_for(self.dataset.task).value_model(self.value.costs(), self.value.currency)

    @property
    def home(self) -> Path:
        return Path(self.paths.home)

    @property
    def lake_uri(self) -> str:
        return self.paths.lake or str(self.home / "lake")

    @property
    def tracking_uri(self) -> str:
        return self.paths.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.paths.mlflow_artifact_root or str(self.home / "mlartifacts")

    @property
    def airflow_url(self) -> str:
        return (self.ui.airflow_url or os.environ.get("AIRFLOW__API__BASE_URL") or "http://127.0.0.1:8080").rstrip("/")

    @property
    def mlflow_url(self) -> str | None:
        url = self.ui.mlflow_url or (self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else "")
        return url.rstrip("/") or None

    def with_overrides(self, overrides: dict[str, Any] | None, sources: dict[str, str] | None = None) -> "Settings":
        """A copy with `{"section.key": value}` or nested-dict overrides (run Params).

        `sources` names where each override key came from (default: "run parameter 'key'"),
        so an invalid value is reported against it.
        """
        if not overrides:
            return self
        data = self.model_dump()
        nested = _nest(overrides)
        _merge(data, nested)
        provenance = {key: (sources or {}).get(key, f"run parameter {key!r}") for key in _flatten(nested)}
        for key in overrides:
            if sources and key in sources:
                provenance.setdefault(key, sources[key])
        return _validate(data, "the loaded settings, with run parameters", provenance)

    def resolved(self) -> dict[str, Any]:
        """Flat `section.key -> value` view, logged with every run."""
        return _flatten(json.loads(self.model_dump_json()))


def default_home(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("NIGHTSHIFT_HOME") or PathSettings().home)


def config_path(config: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Path:
    """The settings file every entry point reads: --config, else $NIGHTSHIFT_CONFIG, else the
    home's nightshift.toml if there is one, else the repo's."""
    env = os.environ if env is None else env
    if config or env.get("NIGHTSHIFT_CONFIG"):
        return Path(config or env["NIGHTSHIFT_CONFIG"])
    home_file = default_home(env) / "nightshift.toml"
    return home_file if home_file.exists() else REPO_ROOT / "nightshift.toml"


def load_settings(config: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Settings:
    """Defaults in code, overridden by nightshift.toml, then by the environment."""
    env = dict(os.environ if env is None else env)
    path = config_path(config, env)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
    elif config or env.get("NIGHTSHIFT_CONFIG"):
        raise FileNotFoundError(f"settings file {path} does not exist (set by NIGHTSHIFT_CONFIG or --config)")
    if "dataset" not in data:
        raise ValueError(f"{path} has no [dataset] section: it must name the entity id, features and label")

    provenance = {key: f"the settings file {path}" for key in _flatten(data)}
    paths = data.setdefault("paths", {})
    for var, key in [("NIGHTSHIFT_HOME", "home"), ("NIGHTSHIFT_LAKE", "lake"), ("MLFLOW_TRACKING_URI", "mlflow_tracking_uri")]:
        if env.get(var):
            paths[key] = env[var]
            provenance[f"paths.{key}"] = f"environment variable {var}={env[var]!r}"
    for var, value in env.items():
        if var.startswith("NIGHTSHIFT__"):
            key = ".".join(var[len("NIGHTSHIFT__"):].lower().split("__"))
            parsed = parse_value(value)
            _merge(data, _nest({key: parsed}))
            for leaf in _flatten(_nest({key: parsed})):
                provenance[leaf] = f"environment variable {var}={value!r}"
    return _validate(data, f"the settings file {path}", provenance)


def lake_table_uri(table: str, config: str | os.PathLike | None = None) -> str:
    """The URI of a lake table where it really is (for Airflow Assets): `file:///...` for a local lake.

    DAG files call this at parse time: it reads the settings file, never the lake.
    """
    uri = load_settings(config).lake_uri
    if "://" not in uri:
        uri = Path(uri).expanduser().resolve().as_uri()
    return f"{uri.rstrip('/')}/{table}"


def run_settings(params: dict[str, Any] | None, **overrides: Any) -> Settings:
    """Settings for one DAG run: the loaded settings, then the run's `settings` Param, then `overrides`."""
    params = params or {}
    from_param = params.get("settings") or {}
    explicit = {k.replace("__", "."): v for k, v in overrides.items() if v is not None}
    sources = {k: f"run Param 'settings' (key {k!r})" for k in from_param}
    sources.update({k: f"run Param {k.split('.')[-1]!r}" for k in explicit})
    return load_settings().with_overrides({**from_param, **explicit}, sources)


def _validate(data: dict[str, Any], source: str, provenance: dict[str, str] | None = None) -> Settings:
    """Validate; an error names each bad field and where its value came from (file, env var or run Param)."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            # A rule across sections names its key itself (`SettingError`); a field's error is at its location.
            key = getattr((e.get("ctx") or {}).get("error"), "key", None) or ".".join(map(str, e["loc"]))
            lines.append(f"  {key}: {e['msg']} (from {_source_of(key, provenance or {}, source)})")
        raise ValueError("invalid settings:\n" + "\n".join(lines)) from None


def _source_of(key: str, provenance: dict[str, str], default: str) -> str:
    """Where the value at `key` came from: the most specific key given, or a key below it, else `default`."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        if (found := provenance.get(".".join(parts[:n]))) is not None:
            return found
    below = sorted({v for k, v in provenance.items() if k.startswith(key + ".")})
    return " and ".join(below) if below else default


def parse_value(value: str) -> Any:
    """A setting given as text (an environment variable, a benchmark's --set): JSON where it parses, else the string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
