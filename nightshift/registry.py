"""The model registry: MLflow model versions and aliases, plus the alias history MLflow lacks.

MLflow keeps only where an alias points now. Backfills must know where `champion` pointed
on any past logical day, so every alias move is also appended to an alias history in the
lake (`<lake>/registry/aliases/`, one small JSON file per event, written atomically). An
event takes effect from the logical day that decided it: the champion *for night D* is the
newest `champion` event decided before D.

mlflow is imported lazily: resolving a version from the history and loading it from the
local model cache needs no MLflow at all.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING


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
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)


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


class Registry:
    def __init__(self, settings: "Settings", lake: Lake | None = None):
        self.settings = settings
        self.name = settings.model.name
        self.lake = lake or Lake(settings.lake_uri)
        self._client = None
        self.cache = Path(settings.home) / "cache" / "models" / self.name

    # -- MLflow ---------------------------------------------------------------------------
    @property
    def client(self):
        # An explicit client, never mlflow.set_tracking_uri(): that also writes MLFLOW_TRACKING_URI
        # into os.environ, and every later load_settings() in the process would inherit this store.
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

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
        """Where an alias points now, according to MLflow."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None
        return ModelRef(self.name, str(mv.version), alias, mv.run_id or "", mv.source)

    def versions(self) -> list[str]:
        """Every version of the registered model, oldest first ([] if it has none yet)."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((str(mv.version) for mv in found), key=int)

    def ref(self, version: str, alias: str = "") -> ModelRef:
        mv = self.client.get_model_version(self.name, str(version))
        return ModelRef(self.name, str(mv.version), alias, mv.run_id or "", mv.source)

    # -- alias moves (MLflow + history) -----------------------------------------------------
    def move_alias(self, alias: str, version: str | None, *, ds: str, reason: str, decided_by: str) -> AliasEvent:
        """Point `alias` at `version` (or remove it) from logical day `ds`, and record it."""
        parse_ds(ds)
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}; Nightshift uses {ALIASES}")
        before = self.current(alias)
        if version is None:
            if before is not None:
                self.client.delete_registered_model_alias(self.name, alias)
            run_id = None
        else:
            self.client.set_registered_model_alias(self.name, alias, str(version))
            run_id = self.client.get_model_version(self.name, str(version)).run_id
        event = AliasEvent(
            seq=len(self.history()) + 1,
            ds=ds,
            alias=alias,
            version=None if version is None else str(version),
            previous=before.version if before else None,
            run_id=run_id,
            reason=reason,
            decided_by=decided_by,
        )
        aliases.append(self.lake, event)
        log.info("alias %s -> %s from %s (%s)", alias, version, ds, reason)
        return event

    def promote(self, version: str, *, ds: str, reason: str, decided_by: str = "retrain") -> list[AliasEvent]:
        """Make `version` the champion; the old champion becomes previous_champion."""
        events = []
        old = self.current(CHAMPION)
        if old is not None and old.version != str(version):
            events.append(self.move_alias(PREVIOUS_CHAMPION, old.version, ds=ds, reason=reason, decided_by=decided_by))
        events.append(self.move_alias(CHAMPION, version, ds=ds, reason=reason, decided_by=decided_by))
        if (ch := self.current(CHALLENGER)) is not None and ch.version == str(version):
            events.append(self.move_alias(CHALLENGER, None, ds=ds, reason="promoted", decided_by=decided_by))
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
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=self.settings.tracking_uri)
        got = tmp if (tmp / "bundle.json").exists() else next(p.parent for p in tmp.rglob("bundle.json"))
        try:
            got.rename(dest)
        except OSError:  # another process won the race: theirs is identical
            pass
        return dest
