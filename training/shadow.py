"""Shadow trials (`gate.mode = "shadow:N"`): trust a challenger on live nights before it replaces the champion.

The offline gate judges a challenger on the holdout: the newest labelled days, labelled early
(fast labels first). With `shadow:N`, a challenger the offline gate would promote becomes the
`candidate` instead (`open_trial`, in the retrain). It scores the next N nights with data into
`shadow/ds=D/`, the same rows the champion scores into `predictions/ds=D/` (mapped scoring, its
rows tagged with its version and alias). Once those nights' labels have matured (the ground
truth's rule: coverage >= `dataset.label_delay.min_coverage`, or `max_delay_days` old), the
gate runs again on them, paired on the same entity ids, with the same rules
(`training.evaluate.judge_challenger`): PROMOTE moves `champion`; any other verdict ends the
trial `rejected`, with its evidence.

Each night with a trial open, `settle_trial` (the nightly flow's ordered step after
`confirm_champion`) decides what the trial does: `next_move` is the pure rule. A trial ends,
with a record, when its candidate was deleted from MLflow, when a newer challenger was trained
(or a newer trial opened), when the champion changed under it (a rollback), or when a drift
alarm episode starts after it opened (the alarm that the challenger answers, on when it opened,
does not end it). While it is open, its record carries the nights scored, each night's label
coverage so far and the running gain, for the Model health page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nightshift.dates import days_between
from nightshift.lake import PREDICTIONS, SHADOW, Lake
from nightshift.registry import CANDIDATE, CHALLENGER, Registry, RegistryError
from nightshift.tables import trials
from training.retrain import _jsonable  # one JSON rule for what travels through XCom
from nightshift.tables.trials import (ENDED_CHAMPION, ENDED_DELETED, ENDED_DRIFT, ENDED_NEWER, OPEN, PROMOTED,
                                      REJECTED)

if TYPE_CHECKING:
    from nightshift.settings import Settings

log = logging.getLogger("nightshift.shadow")

PROMOTE_NOW, OPEN_TRIAL, REJECT_NOW = "promote", "open_trial", "reject"  # the retrain's three ways out of `judge`
SCORE, WAIT, JUDGE, END = "score", "wait", "judge", "end"  # what an open trial does on a night


# -- pure decisions (table-tested) -------------------------------------------------------------

def route(verdict: str, first_model: bool, shadow_nights: int | None) -> str:
    """Where a retrain goes after its offline verdict: `promote`, `open_trial` or `reject`.

    Only a PROMOTE goes on: at once in offline mode (`shadow_nights` None), and for the first model
    ever (there is no champion to score beside); on trial otherwise.
    """
    if verdict != "PROMOTE":
        return REJECT_NOW
    return PROMOTE_NOW if shadow_nights is None or first_model else OPEN_TRIAL


@dataclass(frozen=True)
class Tonight:
    """What night `ds` knows about an open trial (gathered by `settle_trial`)."""

    ds: str
    candidate_exists: bool  # MLflow still holds the candidate's version
    champion: str | None  # the champion in force for night ds
    challenger: str | None  # the challenger in force for night ds (the newest one trained before it)
    newer_trial: str | None  # the candidate of a trial opened after this one and still open, if any
    alarm: bool  # the drift alarm after night ds
    episode_start: str | None  # the first night of that alarm's episode
    scored: int  # the trial's nights scored before ds
    matured: bool  # every scored night's labels had matured as known on ds


@dataclass(frozen=True)
class Move:
    action: str  # SCORE | WAIT | JUDGE | END
    state: str  # the trial's state after tonight (OPEN until it is judged or ended)
    reasons: tuple[str, ...]


def next_move(trial: dict[str, Any], t: Tonight) -> Move:
    """What an open trial does on night `t.ds` (pure).

    Ends first, in this order: the candidate is gone from MLflow; a newer challenger or trial
    superseded it; the champion it is compared with changed; a drift alarm episode started after
    it opened (the world its nights sampled is no longer production's). Then: score tonight while
    fewer than N nights are scored; wait while any scored night's labels are immature; judge.
    """
    v, n = str(trial["candidate"]), int(trial["nights_planned"])
    if not t.candidate_exists:
        return Move(END, ENDED_DELETED, (f"candidate v{v} no longer exists in MLflow (deleted): the trial ends, "
                                         f"champion v{trial['champion']} stays",))
    if t.newer_trial is not None and int(t.newer_trial) > int(v):
        return Move(END, ENDED_NEWER, (f"a newer trial (candidate v{t.newer_trial}) opened: it supersedes v{v}",))
    if t.challenger is not None and int(t.challenger) > int(v):
        return Move(END, ENDED_NEWER, (f"a newer challenger v{t.challenger} was trained during the trial of v{v}",))
    if t.champion != str(trial["champion"]):
        return Move(END, ENDED_CHAMPION, (f"the champion changed during the trial (v{trial['champion']} -> "
                                          f"v{t.champion}): its nights no longer compare v{v} with the champion",))
    if t.alarm and (t.episode_start is None or t.episode_start > trial["opened_ds"]):
        return Move(END, ENDED_DRIFT, (f"a drift alarm since {t.episode_start or t.ds}, after the trial opened on "
                                       f"{trial['opened_ds']}: its nights no longer sample production's world",))
    if t.scored < n:
        return Move(SCORE, OPEN, (f"night {t.scored + 1} of {n}: v{v} scores {t.ds} into shadow/",))
    if not t.matured:
        return Move(WAIT, OPEN, (f"all {n} nights scored; waiting for their labels to mature",))
    return Move(JUDGE, OPEN, (f"all {n} nights scored and their labels matured: the gate judges v{v}",))


def conclusion(verdict: str) -> str:
    """A trial's state once the gate has judged it: PROMOTE -> promoted; anything else -> rejected."""
    return PROMOTED if verdict == "PROMOTE" else REJECTED


# -- opening (the retrain) -----------------------------------------------------------------------

_OFFLINE_KEYS = ("verdict", "basis", "metric", "gain_unit", "gain", "ci_low", "ci_high", "n", "champion", "challenger",
                 "champion_version", "challenger_version", "champion_stale", "gate_holdout", "fingerprint", "trigger",
                 "retrain_reasons", "holdout_days")


def open_trial(settings: "Settings", ds: str, evaluation: dict[str, Any], *,
               registry: Registry | None = None) -> dict[str, Any]:
    """Put a challenger the offline gate passed on trial: move `candidate` to it, and record the retrain's
    verdict (ON_TRIAL, with the offline evidence) and the trial's opening."""
    from training.promotion import ON_TRIAL, record

    n = settings.gate.shadow_nights
    if n is None:
        raise ValueError(f"open_trial needs gate.mode = 'shadow:N' (it is {settings.gate.mode!r})")
    registry = registry or Registry(settings, Lake.of(settings))
    lake = registry.lake
    version, ev = str(evaluation["version"]), evaluation["evidence"]
    champion = ev.get("champion_version")
    tid = trials.trial_id(ds, version)
    supersedes = [t["trial"] for t in trials.open_before(lake, ds) + [r for r in trials.on_day(lake, ds)
                                                                        if r["state"] == OPEN and r["trial"] != tid]]
    reasons = [f"the offline gate passed v{version} ({'; '.join(evaluation['reasons'])}); gate.mode = "
               f"{settings.gate.mode!r}: it scores the next {n} nights beside champion v{champion} and is judged again "
               "on their matured labels"]
    registry.move_alias(CANDIDATE, version, ds=ds, reason=f"shadow trial {tid}: {n} nights beside v{champion}",
                        decided_by="retrain")
    state = {"trial": tid, "candidate": version, "champion": str(champion), "opened_ds": ds, "nights_planned": n,
             "state": OPEN, "reasons": reasons, "decided_by": "retrain", "nights": [], "running": None,
             "offline": {k: ev.get(k) for k in _OFFLINE_KEYS}, "conclusion": None, "supersedes": supersedes}
    record(registry, ds, "promotion", ON_TRIAL, reasons, {**ev, "trial": tid, "nights_planned": n}, version)
    trials.write(lake, ds, state)
    log.info("v%s on shadow trial %s: %d nights beside champion v%s", version, tid, n, champion)
    return {"ds": ds, "champion": str(champion), "verdict": ON_TRIAL, "reasons": reasons, "candidate": version,
            "trial": tid, "nights": n}


# -- the nights (the nightly flow) ---------------------------------------------------------------

def trial_nights(lake: Lake, trial: dict[str, Any], before: str) -> list[str]:
    """The trial's nights scored before `before`: shadow partitions after its opening, scored by its candidate (at most N)."""
    from nightshift.tables.predictions import scored_by

    days = [d for d in lake.partitions(SHADOW) if trial["opened_ds"] < d < before]
    return [d for d in days if scored_by(lake, d, SHADOW) == str(trial["candidate"])][:int(trial["nights_planned"])]


@dataclass
class Paired:
    """The trial's nights as known on a day: each night's coverage, and the labelled rows both models scored."""

    nights: list[dict[str, Any]]
    y: np.ndarray
    p_champion: np.ndarray
    p_candidate: np.ndarray
    segments: np.ndarray | None
    task: Any

    @property
    def matured(self) -> bool:
        return bool(self.nights) and all(n["matured"] for n in self.nights)


def paired(settings: "Settings", lake: Lake, nights: list[str], ds: str, *, segments: bool = False) -> Paired:
    """Champion (`predictions/`) and candidate (`shadow/`) on the same entity ids of each night, with the labels
    that had arrived by `ds`; each night's coverage and maturity by the ground truth's rule."""
    from nightshift.lake import FEATURES
    from nightshift.tables import labels as labels_table
    from nightshift.tables.labels import is_matured
    from nightshift.task import task_for

    spec, policy = settings.dataset, settings.dataset.label_delay
    base = task_for(spec.task)
    known = labels_table.arrived(lake, spec, ds, nights)
    per_night, ys, champs, cands, segs = [], [], [], [], []
    classes: tuple[str, ...] | None = None
    for night in nights:
        c_task = base.from_schema(lake.dataset(PREDICTIONS, night).schema.names)
        k_task = base.from_schema(lake.dataset(SHADOW, night).schema.names)
        champ = lake.read(PREDICTIONS, night, columns=[spec.entity_id, *c_task.prediction_columns()])
        cand = lake.read(SHADOW, night, columns=[spec.entity_id, *k_task.prediction_columns()])
        cand = cand.rename_columns([spec.entity_id, *(f"candidate__{c}" for c in k_task.prediction_columns())])
        both = champ.join(cand, keys=spec.entity_id, join_type="inner")
        if segments and spec.segment:
            seg = lake.read(FEATURES, night, columns=[spec.entity_id, spec.segment])
            both = both.join(seg.rename_columns([spec.entity_id, "segment__"]), keys=spec.entity_id, join_type="left outer")
        labelled = labels_table.join(both, known, night, spec)
        coverage = labelled.num_rows / max(both.num_rows, 1)
        age = days_between(night, ds)
        per_night.append({"ds": night, "rows": both.num_rows, "labelled": labelled.num_rows,
                          "coverage": round(coverage, 6), "age_days": age,
                          "matured": is_matured(coverage, age, policy.min_coverage, policy.max_delay_days)})
        if not labelled.num_rows:
            continue
        c_classes, k_classes = getattr(c_task, "classes", None), getattr(k_task, "classes", None)
        if k_classes is not None:  # multiclass: one vocabulary for both (the candidate's, then the champion's extra)
            classes = tuple(dict.fromkeys((*(classes or ()), *k_classes, *(c_classes or ()))))
        ys.append(base.labels(labelled.column(spec.label), f"labels for shadow/ds={night}"))
        champs.append((c_task.pred_of(labelled), c_classes))
        cand_cols = labelled.select([f"candidate__{c}" for c in k_task.prediction_columns()])
        cands.append((k_task.pred_of(cand_cols.rename_columns(k_task.prediction_columns())), k_classes))
        if segments and spec.segment:
            segs.append(np.asarray(labelled.column("segment__").to_pylist(), dtype=object))
    task = base.bind(classes)
    if not ys:
        empty = np.zeros((0, len(classes))) if classes else np.array([])
        return Paired(per_night, np.array([]), empty, empty, None, task)
    y = np.concatenate(ys)
    p_champion = np.concatenate([task.align(p, c) for p, c in champs])
    p_candidate = np.concatenate([task.align(p, c) for p, c in cands])
    return Paired(per_night, y, p_champion, p_candidate, np.concatenate(segs) if segs else None, task)


def running(p: Paired) -> dict[str, Any] | None:
    """The gain so far, on the labels that have arrived (a point estimate; the gate's interval comes at the end)."""
    if not len(p.y):
        return None
    task = p.task
    champion, candidate = task.primary_value(p.y, p.p_champion), task.primary_value(p.y, p.p_candidate)
    gain = float(task.gain(champion, candidate)) if champion is not None and candidate is not None else None
    return {"metric": task.primary.name, "gain_unit": task.gain_unit, "labelled": int(len(p.y)),
            "rows": int(sum(n["rows"] for n in p.nights)), "champion": champion, "candidate": candidate, "gain": gain}


def judge_trial(settings: "Settings", trial: dict[str, Any], p: Paired, ds: str):
    """The gate on the trial's matured nights, paired, with the same rules as offline; (Verdict, evidence)."""
    from training.evaluate import (effective_gate, judge_challenger, paired_bootstrap, prediction_churn,
                                   segment_deltas)

    task = p.task
    gate = effective_gate(settings.gate, task)
    too_few = task.too_few(p.y, gate.min_rows)
    stale = (trial.get("offline") or {}).get("champion_stale")
    evidence: dict[str, Any] = {"ds": ds, "trial": trial["trial"], "nights": [n["ds"] for n in p.nights],
                                "holdout_rows": int(len(p.y)), "champion_version": str(trial["champion"]),
                                "challenger_version": str(trial["candidate"]), "task": task.name.value,
                                "gain_unit": task.gain_unit, "first_model": False, "champion_stale": stale,
                                "gate": gate.model_dump()}
    if too_few:
        from training.evaluate import Verdict

        verdict = Verdict("INSUFFICIENT_EVIDENCE", tuple(too_few))
    else:
        boot = paired_bootstrap(p.y, p.p_champion, p.p_candidate, n_boot=gate.n_boot, confidence=gate.confidence,
                                seed=gate.seed, task=task)
        segs = []
        if p.segments is not None:
            segs = segment_deltas(p.y, p.p_champion, p.p_candidate, p.segments.astype(str), gate.min_segment_rows,
                                  task=task)
        churn = prediction_churn(task, p.p_champion, p.p_candidate, settings.scoring.threshold)
        verdict = judge_challenger({**boot, "too_few": too_few, "churn": churn}, segs, gate, stale=stale)
        evidence.update({**boot, "segments": segs, "churn": churn})
    evidence.update({"verdict": verdict.verdict, "basis": verdict.basis, "reasons": list(verdict.reasons)})
    return verdict, _jsonable(evidence)


def settle_trial(settings: "Settings", ds: str, *, lake: Lake | None = None) -> dict[str, Any]:
    """Night `ds` for every open trial: end, judge (and promote or reject), or carry it on, and record its state.

    Returns `score` (what `trial_night` lets through: the candidate to score tonight into shadow/, or
    None) and each trial's state after tonight. Runs in date order, after `confirm_champion` has
    settled tonight's drift alarm.
    """
    from nightshift.tables import drift as drift_table

    lake = lake or Lake.of(settings)
    open_trials = trials.open_before(lake, ds)
    if not open_trials:
        return {"ds": ds, "score": None, "trials": []}
    registry = Registry(settings, lake)
    champion = registry.version_as_of(ds)
    challenger = registry.version_as_of(ds, CHALLENGER)
    night = (drift_table.read(lake, ds) or [{}])[0]
    newest = open_trials[-1]
    score, out = None, []
    for trial in open_trials:
        v = str(trial["candidate"])
        exists = registry.exists(v)
        nights = trial_nights(lake, trial, ds)
        p = paired(settings, lake, nights, ds) if exists and nights else None
        t = Tonight(ds=ds, candidate_exists=exists, champion=champion.version if champion else None,
                    challenger=challenger.version if challenger else None,
                    newer_trial=str(newest["candidate"]) if trial is not newest else None,
                    alarm=bool(night.get("day_drift")), episode_start=night.get("episode_start"), scored=len(nights),
                    matured=bool(p and len(nights) >= int(trial["nights_planned"]) and p.matured))
        move = next_move(trial, t)
        state = {**trial, "state": move.state, "reasons": list(move.reasons), "decided_by": "nightly", "as_of": ds,
                 "action": move.action, "nights_scored": nights, "nights": p.nights if p else [],
                 "running": running(p) if p else None}
        state.pop("ds", None)
        if move.action == JUDGE:
            if settings.dataset.segment:  # the guardrails read each row's segment from the features: on this night only
                p = paired(settings, lake, nights, ds, segments=True)
            verdict, evidence = judge_trial(settings, trial, p, ds)
            state.update(state=conclusion(verdict.verdict), conclusion=evidence,
                         reasons=[f"the gate on the trial's {len(nights)} matured nights ({len(p.y)} labelled rows, "
                                  f"paired): {verdict.verdict}", *verdict.reasons])
            _conclude(registry, lake, ds, state)
        elif move.action == END:
            _release(registry, v, ds, f"shadow trial {trial['trial']} {move.state}")
            trials.write(lake, ds, state)
        else:
            trials.write(lake, ds, state)
            if move.action == SCORE and trial is newest:
                ref = registry.ref(v, CANDIDATE)
                score = {"trial": trial["trial"], "version": v, "run_id": ref.run_id, "source": ref.source,
                         "name": ref.name, "night": len(nights) + 1, "of": int(trial["nights_planned"])}
        log.info("shadow trial %s on %s: %s (%s)", trial["trial"], ds, state["state"], "; ".join(state["reasons"]))
        out.append({"trial": trial["trial"], "candidate": v, "state": state["state"], "action": move.action,
                    "nights": len(nights), "running": state["running"]})
    return {"ds": ds, "score": score, "trials": out}


def _conclude(registry: Registry, lake: Lake, ds: str, state: dict[str, Any]) -> None:
    """Promote the candidate (or let it go), tag its MLflow version, and record the trial's end; the record is
    written even when MLflow fails to take the tags (the move is made), and the fault is then raised."""
    from training import tracking

    v, ev = str(state["candidate"]), state["conclusion"]
    why = f"shadow trial {state['trial']}: " + "; ".join(ev["reasons"])
    if state["state"] == PROMOTED:
        registry.promote(v, ds=ds, reason=why, decided_by="shadow trial")
    else:
        _release(registry, v, ds, why)
    fault = None
    try:
        tracking.tag_decision(registry, v, "trial", state["state"], ds, state["reasons"], ev)
    except RegistryError as exc:
        fault = exc
    trials.write(lake, ds, state)
    if fault is not None:
        raise RegistryError(f"shadow trial {state['trial']} is {state['state']} on {ds} and recorded, but MLflow did "
                            f"not take its tags: {fault}") from fault


def _release(registry: Registry, version: str, ds: str, reason: str) -> None:
    """Remove `candidate` when it still names `version` in the alias history (a newer trial may have moved it on);
    for a deleted version MLflow has dropped the alias already, and only the history records it."""
    with registry.moving():
        moves = [e for e in registry.history() if e.alias == CANDIDATE]
        if moves and moves[-1].version == version:
            registry.move_alias(CANDIDATE, None, ds=ds, reason=reason, decided_by="shadow trial")

