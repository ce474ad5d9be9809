"""One definition of a flow's steps, run by both the DAGs and the in-process CLI.

A `Flow` is a small graph of `Step`s. Each step names the function that does its work
directly (`Step("validate", nightly.validate)`: go-to-definition works, and nothing is looked up
by name at run time). Step modules import their heavy dependencies inside the functions, so a
DAG file can read a flow at parse time without importing anything heavy (a test holds every DAG
to that). Every step function has the same signature, `fn(ctx: StepContext) -> dict`, and
returns a small dict of references, never data. Its docstring, after the step's own `doc`, is
the task's `doc_md` in the Airflow grid (`Step.doc_md`).

One `StepContext` carries a run's settings, lake and registry, each built once on first use:
in-process, once for the whole run (hand-offs included, where the settings do not change); in
Airflow, once per task process.

Kinds of step:
- `task`: runs its function;
- `gate`: its function returns a bool; False skips everything downstream of it (Airflow: short-circuit);
- `branch`: the flow continues at `choices[0]` when the branch is taken and at `choices[1]`
  (if there is one) when it is not (Airflow: `@task.branch`). Taken is the function's result as
  a bool, or, where the step names a `choose` function, `choose(ctx, result)`: then the step's
  own result is a record like any task's, and a decision and its branch cost one task, not two.
  A branch with more than two ways out names the one it takes: its function (or `choose`)
  returns that step's id;
- `handoff`: starts another flow with the conf its function returns, and waits for it
  (Airflow: `TriggerDagRunOperator(wait_for_completion=True)`);
- `join`: does nothing; it only orders (Airflow: `EmptyOperator`).

A step may be *mapped*: `map_over="validate"` runs its function once per item of the list
an earlier step returned (Airflow: dynamic task mapping, one mapped task instance per
item, each retried alone); its result is the list of the items' results, in order. The
in-process runner does the same work in a loop.

`ordered` steps run in date order across days (Airflow: `depends_on_past`). `run_flow` is the
in-process runner; the DAG files wire the same steps by hand, in the tutorial style, and a
test holds their task ids and edges to the definition.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nightshift.lake import Lake
    from nightshift.registry import Registry
    from nightshift.settings import Settings

TASK, GATE, BRANCH, HANDOFF, JOIN = "task", "gate", "branch", "handoff", "join"


StepFunction = Callable[["StepContext"], Any]


@dataclass(frozen=True)
class Step:
    id: str
    call: StepFunction | None = None  # the step's function; None for a join
    after: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # earlier steps whose results it reads (Airflow: XCom arguments, so also edges)
    kind: str = TASK
    ordered: bool = False
    choices: tuple[str, ...] = ()  # branch: (when taken, when not); one choice: that step, or nothing
    choose: Callable[["StepContext", Any], bool] | None = None  # branch: (ctx, result) -> taken; default bool(result)
    flow: "Flow | None" = None  # handoff: the flow it starts
    queue: str | None = None
    pool: str | None = None
    trigger_rule: str = "all_success"
    map_over: str | None = None  # an earlier step whose result is a list: run once per item
    doc: str = ""

    def run(self, ctx: "StepContext") -> Any:
        """The step's work: its function on the context."""
        if self.call is None:
            raise TypeError(f"step {self.id!r} is a {self.kind} and has no function to run")
        return self.call(ctx)

    def taken(self, ctx: "StepContext", result: Any) -> bool:
        """A branch's choice: `choices[0]` when True."""
        return bool(self.choose(ctx, result) if self.choose else result)

    def follow(self, taken: bool) -> tuple[str | None, str | None]:
        """A branch's (chosen, other) step ids for a choice; None where a one-choice branch goes nowhere."""
        yes, no = self.choices[0], (self.choices[1] if len(self.choices) > 1 else None)
        return (yes, no) if taken else (no, yes)

    @property
    def doc_md(self) -> str:
        """What the Airflow grid shows for the step's task: its doc, then its function and that function's docstring."""
        parts = [self.doc[:1].upper() + self.doc[1:] + ("" if self.doc.endswith(".") else ".")] if self.doc else []
        if self.call is not None:
            parts.append(f"Runs `{self.call.__module__}.{self.call.__qualname__}`.")
            if self.call.__doc__:
                parts.append(inspect.cleandoc(self.call.__doc__))
        return "\n\n".join(parts)

    def pick(self, ctx: "StepContext", result: Any) -> str | None:
        """A branch's chosen step id: the one its function (or `choose`) names, or by `taken` when it answers
        yes or no; None where a one-choice branch goes nowhere."""
        got = self.choose(ctx, result) if self.choose else result
        if isinstance(got, str):
            if got not in self.choices:
                raise ValueError(f"branch {self.id!r} chose {got!r}, which is not one of its choices {self.choices}")
            return got
        return self.follow(bool(got))[0]


@dataclass(frozen=True)
class Flow:
    id: str
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"flow {self.id!r} has no step {step_id!r}; steps are {[s.id for s in self.steps]}")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def edges(self) -> set[tuple[str, str]]:
        """(upstream, downstream) pairs: what the DAG's dependencies must equal."""
        return {(up, s.id) for s in self.steps for up in (*s.after, *s.needs, *((s.map_over,) if s.map_over else ()))}


@dataclass
class StepContext:
    """What a step sees: the run's settings, lake and registry, the night, the params, and the results
    of the steps it reads.

    `settings` may be given as a zero-argument function: it is resolved on first use, so a step that
    never reads them (a branch on an upstream result) does not pay for loading them. The lake and the
    registry are built from the settings on first use and then shared by every step that runs on this
    context (and by mapped items and hand-offs with unchanged settings)."""

    settings_source: "Settings | Callable[[], Settings]"
    ds: str
    params: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # upstream step id -> its result
    progress: bool = False
    item: Any = None  # a mapped step's own item (one of `map_over`'s list)
    run_id: str = ""  # the run this step belongs to (Airflow's run_id; in-process, one per run_flow)
    _lake: "Lake | None" = field(default=None, repr=False)
    _registry: "Registry | None" = field(default=None, repr=False)

    @property
    def settings(self) -> "Settings":
        if callable(self.settings_source):
            self.settings_source = self.settings_source()
        return self.settings_source

    @property
    def lake(self) -> "Lake":
        """The run's lake (`Lake.of(settings)`), built once."""
        if self._lake is None:
            from nightshift.lake import Lake

            self._lake = Lake.of(self.settings)
        return self._lake

    @property
    def registry(self) -> "Registry":
        """The run's model registry, on the run's lake, built once (MLflow is imported on first use)."""
        if self._registry is None:
            from nightshift.registry import Registry

            self._registry = Registry(self.settings, self.lake)
        return self._registry


def run_flow(flow: Flow, settings: "Settings", ds: str, params: dict[str, Any] | None = None, *,
             progress: bool = False, on_step: Callable[[str, Any], None] | None = None,
             _shared: StepContext | None = None) -> dict[str, Any]:
    """Run a flow in-process, in dependency order, following gates, branches and hand-offs.

    Returns every step's result by step id; skipped steps are absent. One context serves the whole
    run, so the lake and the registry are built once (a hand-off with unchanged settings shares them).
    """
    import uuid

    ctx = StepContext(settings, ds, dict(params or {}), {}, progress, run_id=f"inprocess-{uuid.uuid4().hex[:12]}",
                      _lake=_shared._lake if _shared else None, _registry=_shared._registry if _shared else None)
    skipped: set[str] = set()
    done: set[str] = set()
    for step in _topological(flow):
        ups = list(step.after)
        if step.trigger_rule == "all_success":
            runnable = all(u in done for u in ups)
        else:  # none_failed_min_one_success: at least one upstream ran
            runnable = any(u in done for u in ups)
        if not runnable or step.id in skipped:
            skipped.add(step.id)
            continue
        if step.kind == JOIN:
            result: Any = {}
        elif step.kind == HANDOFF:
            conf = step.run(ctx)
            overrides = conf.get("settings")
            result = {"conf": conf, "results": run_flow(step.flow, settings.with_overrides(overrides), conf["ds"], conf,
                                                        progress=progress, on_step=on_step,
                                                        _shared=None if overrides else ctx)}
        elif step.map_over:
            result = [step.run(dataclasses.replace(ctx, item=item)) for item in ctx.results[step.map_over]]
        else:
            result = step.run(ctx)
        ctx.results[step.id] = result
        done.add(step.id)
        if on_step:
            on_step(step.id, result)
        if step.kind == GATE and not result:
            skipped.update(_only_under(flow, step.id, None) - {step.id})
        elif step.kind == BRANCH:
            chosen = step.pick(ctx, result)
            for other in step.choices:
                if other != chosen:
                    skipped.update(_only_under(flow, other, chosen))
    return ctx.results


def _topological(flow: Flow) -> list[Step]:
    order, seen = [], set()

    def visit(s: Step) -> None:
        if s.id in seen:
            return
        for u in s.after:
            visit(flow.step(u))
        seen.add(s.id)
        order.append(s)

    for s in flow.steps:
        visit(s)
    return order


def _only_under(flow: Flow, root: str, keep: str | None) -> set[str]:
    """`root` and every step reachable only through it (not through `keep`, if given)."""
    down: dict[str, list[str]] = {}
    for s in flow.steps:
        for u in s.after:
            down.setdefault(u, []).append(s.id)

    def reach(start: str) -> set[str]:
        out, todo = set(), [start]
        while todo:
            x = todo.pop()
            if x not in out:
                out.add(x)
                todo.extend(down.get(x, []))
        return out

    return reach(root) - (reach(keep) if keep else set())
