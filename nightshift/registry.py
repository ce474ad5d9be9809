"""The model registry: MLflow model versions and aliases, plus the alias history MLflow lacks.

MLflow keeps only where an alias points now. Backfills must know where `champion` pointed
on any past logical day, so every alias move is also appended to an alias history in the
lake (`<lake>/registry/aliases/`, one small JSON file per event, written atomically). An
event takes effect from the logical day that decided it: the champion *for night D* is the
newest `champion` event decided before D.

mlflow is imported lazily: resolving a version from the history and loading it from the
local model cache needs no MLflow at all.

MLflow faults are told apart from answers. "Not found" (no such alias or version) is an
answer; an unreachable or failing tracking server raises `RegistryUnavailable`, naming
MLflow and its URI, once MLflow's own HTTP retries give up. Those retries are bounded by
`paths.mlflow_timeout_s` in total (60 s by default): every MLflow call runs with
`MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `_BACKOFF_FACTOR` / `_BACKOFF_JITTER` / `_TIMEOUT`
derived from it. An alias move and its history entry happen both or neither: the entry is
staged before MLflow moves, published after, and a move that MLflow made but whose entry
was never published (a crash between the two) is reconciled by the next move. Moves are
serialised by a lock in the lake, so a promotion racing a rollback leaves a history whose
order is MLflow's.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any


from nightshift.dates import parse_ds
from nightshift.lake import Lake
from nightshift.tables import aliases
from nightshift.tables.aliases import AliasEvent

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
CANDIDATE = "candidate"  # a challenger on shadow trial (gate.mode = "shadow:N"): scores beside the champion
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION, CANDIDATE)


@dataclass(frozen=True)
class ModelRef:
    """Which model: enough to load it and to stamp lineage on every prediction."""

    name: str
    version: str
    alias: str
    run_id: str
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


class NoChampion(LookupError):
    """No model has been promoted yet for the requested day."""


class RegistryError(RuntimeError):
    """MLflow failed; the message names MLflow, its URI and what to do."""


class RegistryUnavailable(RegistryError):
    """The MLflow tracking server could not be reached (or kept failing) within the configured timeout."""


# MLflow error codes that are answers about the registry's content, not faults of the server.
_ANSWERS = {"RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_PARAMETER_VALUE", "INVALID_STATE",
            "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST", "NOT_FOUND"}


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error means "no such alias/version/model" rather than a fault."""
    code = str(getattr(exc, "error_code", ""))
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower())


def http_budget(total_s: float) -> dict[str, str]:
    """MLflow's HTTP retry settings whose worst case (every try timing out, every backoff at
    its maximum) stays within `total_s` seconds.

    urllib3 waits `factor * 2**(n-1)` (+ up to `jitter`) before the n-th retry, and each try
    may wait `timeout`: worst case = (retries + 1) * timeout + backoff. The retries get 85% of
    the total; the rest is left for the command's own start-up and work, so that the whole
    command, not only its MLflow call, fails within `total_s`.
    """
    total_s *= 0.85
    factor, jitter = 1, 0.5
    retries = 0
    for r in range(1, 4):  # as many retries as fit in a third of the budget, at most 3
        if (2 ** r - 1) * factor + r * jitter <= total_s / 3:
            retries = r
    backoff = (2 ** retries - 1) * factor + retries * jitter if retries else 0
    timeout = max(1, int((total_s - backoff) / (retries + 1)))
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(jitter), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
            # A Retry-After header could ask for minutes; the budget decides instead.
            "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false"}


@contextlib.contextmanager
def _http_env(budget: dict[str, str]) -> Iterator[None]:
    # MLflow reads these on every request; set them for the call only, and put back what was there.
    saved = {k: os.environ.get(k) for k in budget}
    os.environ.update(budget)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Guarded:
    """An MlflowClient whose every call is bounded by the timeout and reports faults by name."""

    def __init__(self, client, uri: str, timeout_s: float):
        self._client, self._uri, self._timeout = client, uri, timeout_s
        self._budget = http_budget(timeout_s)

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            return guarded_call(attr, self._uri, self._timeout, self._budget, name, *args, **kwargs)

        return call


def guarded_call(fn, uri: str, timeout_s: float, budget: dict[str, str], what: str, *args, **kwargs) -> Any:
    """Run one MLflow call within the retry budget; a server fault becomes `RegistryUnavailable`."""
    from mlflow.exceptions import MlflowException

    start = time.monotonic()
    try:
        with _http_env(budget):
            return fn(*args, **kwargs)
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) in _ANSWERS and not _transport(exc):
            raise
        raise _unavailable(uri, what, exc, time.monotonic() - start, timeout_s) from exc
    except Exception as exc:
        # Transport and store faults; a local disk error (downloading into a full cache) passes through as itself.
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__.split(".")[0] in (
                "requests", "urllib3", "sqlalchemy"):
            raise _unavailable(uri, what, exc, time.monotonic() - start, timeout_s) from exc
        raise


def _transport(exc: BaseException) -> bool:
    text = str(exc)
    return "API request to" in text or "Max retries exceeded" in text


def _unavailable(uri: str, what: str, exc: BaseException, elapsed: float, timeout_s: float) -> RegistryUnavailable:
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(cause) > 240:
        cause = cause[:240] + "..."
    return RegistryUnavailable(
        f"MLflow at {uri} is unreachable or failing ({what} gave up after {elapsed:.0f}s: {cause}). Check that the "
        f"tracking server is up and MLFLOW_TRACKING_URI / paths.mlflow_tracking_uri points at it, then rerun; retries "
        f"are bounded by paths.mlflow_timeout_s (now {timeout_s:g}s)")


class Registry:
    def __init__(self, settings: "Settings", lake: Lake | None = None):
        self.settings = settings
        self.name = settings.model.name
        self.lake = lake or Lake.of(settings)
        self._client = None
        self._holding = False  # this object holds the move lock
        self.cache = Path(settings.home) / "cache" / "models" / self.name

    # -- MLflow ---------------------------------------------------------------------------
    @property
    def client(self):
        """The MLflow client, every call bounded by `paths.mlflow_timeout_s` and its faults named."""
        # An explicit client, never mlflow.set_tracking_uri(): that also writes MLFLOW_TRACKING_URI
        # into os.environ, and every later load_settings() in the process would inherit this store.
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.tracking_uri
            self._client = _Guarded(MlflowClient(tracking_uri=uri, registry_uri=uri), uri, self.timeout_s)
        return self._client

    @property
    def timeout_s(self) -> float:
        return float(self.settings.paths.mlflow_timeout_s)

    def experiment_id(self) -> str:
        name = self.settings.paths.mlflow_experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        root = self.settings.artifact_root
        location = root if "://" in root else Path(root).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def register(self, run_id: str, artifact_path: str = "model", tags: dict[str, str] | None = None) -> str:
        """Register a run's logged bundle as a new model version; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.name, description="Nightshift's production model")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
        mv = self.client.create_model_version(self.name, source, run_id=run_id, tags=tags or {})
        return str(mv.version)

    def current(self, alias: str) -> ModelRef | None:
        """Where an alias points now, according to MLflow (None: the alias, or the model, does not
        exist). An unreachable MLflow raises `RegistryUnavailable`, never reads as "no alias"."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if is_not_found(exc):
                return None
            raise RegistryError(f"MLflow at {self.settings.tracking_uri} refused to say where alias {alias!r} of "
                                f"{self.name!r} points: {exc}") from exc
        return ModelRef(self.name, str(mv.version), alias, mv.run_id or "", mv.source)

    def versions(self) -> list[str]:
        """Every version of the registered model, oldest first ([] if it has none yet)."""
        found = self.client.search_model_versions(f"name = '{self.name}'")  # noqa: S608 - an MLflow filter, not SQL; the name comes from settings
        return sorted((str(mv.version) for mv in found), key=int)

    def exists(self, version: str) -> bool:
        """Whether MLflow still holds this version of the registered model (False: deleted, or never was).
        An unreachable MLflow raises `RegistryUnavailable`: a fault never reads as "deleted"."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def ref(self, version: str, alias: str = "") -> ModelRef:
        mv = self.client.get_model_version(self.name, str(version))
        return ModelRef(self.name, str(mv.version), alias, mv.run_id or "", mv.source)

    # -- alias moves (MLflow + history) -----------------------------------------------------
    def move_alias(self, alias: str, version: str | None, *, ds: str, reason: str, decided_by: str) -> AliasEvent:
        """Point `alias` at `version` (or remove it) from logical day `ds`, and record it: both or neither."""
        parse_ds(ds)
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}; Nightshift uses {ALIASES}")
        with self.moving():
            return self._move(alias, version, ds=ds, reason=reason, decided_by=decided_by)

    @contextlib.contextmanager
    def moving(self) -> Iterator[None]:
        """Hold the registry's move lock (reentrant in this process), reconciling a crashed move first."""
        if self._holding:
            yield
            return
        with self.lake.exclusive("registry-aliases"):
            self._holding = True
            try:
                self.reconcile()
                yield
            finally:
                self._holding = False

    def _move(self, alias: str, version: str | None, *, ds: str, reason: str, decided_by: str) -> AliasEvent:
        before = self.current(alias)
        run_id = None if version is None else self.client.get_model_version(self.name, str(version)).run_id
        event = AliasEvent(
            seq=aliases.next_seq(self.lake),
            ds=ds,
            alias=alias,
            version=None if version is None else str(version),
            previous=before.version if before else None,
            run_id=run_id,
            reason=reason,
            decided_by=decided_by,
        )
        pending = aliases.stage(self.lake, event)  # written, not yet visible in the history
        try:
            if version is None:
                if before is not None:
                    self.client.delete_registered_model_alias(self.name, alias)
            else:
                self.client.set_registered_model_alias(self.name, alias, str(version))
        except BaseException:
            aliases.discard(self.lake, pending)  # MLflow did not move: no entry either
            raise
        try:
            aliases.publish(self.lake, pending)
        except BaseException as exc:
            self._undo(alias, before, exc)
            aliases.discard(self.lake, pending)
            raise
        log.info("alias %s -> %s from %s (%s)", alias, version, ds, reason)
        return event

    def _undo(self, alias: str, before: ModelRef | None, cause: BaseException) -> None:
        """Put an alias back after its history entry could not be written (best effort, logged)."""
        try:
            if before is None:
                self.client.delete_registered_model_alias(self.name, alias)
            else:
                self.client.set_registered_model_alias(self.name, alias, before.version)
        except Exception as exc:  # noqa: BLE001 - the original failure is what the caller must see
            log.error("could not put alias %s back to %s after the history write failed (%s): %s; the next move "
                      "reconciles it", alias, before.version if before else None, cause, exc)

    def reconcile(self) -> list[AliasEvent]:
        """Finish or drop moves a crash interrupted: a staged entry is published if MLflow made
        the move, else dropped. Returns the entries published."""
        published = []
        for pending, event in aliases.pending(self.lake):
            now = self.current(event.alias)
            if (now.version if now else None) == event.version:
                aliases.publish(self.lake, pending)
                published.append(event)
                log.warning("published alias move %s -> %s that a crash interrupted", event.alias, event.version)
            else:
                aliases.discard(self.lake, pending)
        return published

    def promote(self, version: str, *, ds: str, reason: str, decided_by: str = "retrain") -> list[AliasEvent]:
        """Make `version` the champion; the old champion becomes previous_champion."""
        events = []
        with self.moving():
            old = self.current(CHAMPION)
            if old is not None and old.version != str(version):
                events.append(self._move(PREVIOUS_CHAMPION, old.version, ds=ds, reason=reason, decided_by=decided_by))
            events.append(self._move(CHAMPION, version, ds=ds, reason=reason, decided_by=decided_by))
            for alias in (CHALLENGER, CANDIDATE):  # a promoted challenger (or trial candidate) is neither any more
                if (ch := self.current(alias)) is not None and ch.version == str(version):
                    events.append(self._move(alias, None, ds=ds, reason="promoted", decided_by=decided_by))
        return events

    # -- history (the ledger in the lake) ----------------------------------------------------
    def history(self) -> list[AliasEvent]:
        return aliases.history(self.lake)

    def version_as_of(self, ds: str, alias: str = CHAMPION) -> AliasEvent | None:
        """The alias's event in force for night `ds`: the newest one decided before `ds`."""
        return aliases.in_force(self.lake, ds, alias)

    # -- resolving which model scores a night --------------------------------------------------
    def resolve(self, ds: str, mode: str) -> ModelRef:
        """The model that scores night `ds`: `as_of` (champion on that day) or `champion` (today's)."""
        if mode == "as_of":
            event = self.version_as_of(ds)
            if event is None:
                raise NoChampion(
                    f"no champion was in force on {ds}: the first model is promoted by a retrain "
                    f"(run `nightshift retrain --ds <an earlier day>` or trigger the retrain DAG)"
                )
            return ModelRef(self.name, event.version, "champion(as_of)", event.run_id or "", "")
        if mode == "champion":
            ref = self.current(CHAMPION)
            if ref is None:
                raise NoChampion("the registry has no champion yet: run a retrain first")
            return ref
        raise ValueError(f"model must be 'as_of' or 'champion', not {mode!r}")

    def local_path(self, version: str) -> Path:
        """A local copy of a version's bundle, downloaded once (versions are immutable)."""
        dest = self.cache / f"v{version}"
        if (dest / "bundle.json").exists():
            return dest
        import mlflow.artifacts

        source = self.client.get_model_version(self.name, str(version)).source
        tmp = self.cache / f"_v{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True, exist_ok=True)
        uri = self.settings.tracking_uri
        guarded_call(mlflow.artifacts.download_artifacts, uri, self.timeout_s, http_budget(self.timeout_s),
                     f"downloading model version {version}", artifact_uri=source, dst_path=str(tmp), tracking_uri=uri)
        got = tmp if (tmp / "bundle.json").exists() else next(p.parent for p in tmp.rglob("bundle.json"))
        try:
            got.rename(dest)
        except OSError:  # another process won the race: theirs is identical
            pass
        return dest
