"""What the compiled engine runs: an allow-list over the scenario schema, the run options
and the state at take-over.

Every field of the scenario schema (:mod:`epcsim.scenario.schema`), every option of
:func:`epcsim.run` and :class:`~epcsim.sim.engine.Simulation`, and every condition
:func:`~epcsim.compiled.engine.take_over` checks when the first enclave thread runs has
one :class:`Rule` in :data:`RULES`: :data:`ALWAYS` supported, :func:`never` supported
(when set), or supported :func:`when` a named predicate of the value holds.  A field or
option without a rule is not supported: the reference engine runs the scenario, and the
reason says which field it is.  So a new knob of the reference model runs compiled only
once someone has declared that the compiled engine models it.

Keys (the dotted path of a field in the schema):

- ``host.duration``: a field of a table; ``host.experiments.no_age``: of a nested table;
- ``enclave``: a list of tables (the rule judges the whole list), ``enclave[].start``: a
  field of each element;
- ``host.costs{}``: a table of free-form keys (the rule judges the whole table);
- ``option.NAME``: an argument of :func:`epcsim.run` or ``Simulation``;
- ``dynamic.NAME``: a condition of the run's state when the first enclave thread runs.

The order of :data:`RULES` is the order reasons are reported in when several apply.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from ..kernel.constants import SGX_ENCL_INITIALIZED
from ..scenario.schema import Scenario, VepcSpec
from .layout import POLICY_IDS

if TYPE_CHECKING:
    from ..sim.engine import Instance, Simulation

__all__ = [
    "ALWAYS",
    "COMPILED_COSTS",
    "MAX_THREADS",
    "RULES",
    "Rule",
    "dynamic_ineligibility",
    "never",
    "option_ineligibility",
    "refusal",
    "schema_keys",
    "static_ineligibility",
    "when",
]

#: enclave threads the core runs at most (each has a CHUNK_CAP buffer: 512 KiB)
MAX_THREADS = 256

#: the reclaim designs (``host.policy``, epcsim.policies) the compiled engine implements
#: (S_POLICY: v14's and v13's walks in compiled/reclaim.py, limit-only's charge in
#: compiled/epc_cgroup.py)
COMPILED_POLICIES = frozenset(POLICY_IDS)

#: the ``[host.costs]`` keys the core reads (epcsim.costs.CostModel: the ENCLS leaves
#: through ``leaf_costs()``, ``access``, ``fault``, ``kernel_step``, ``reclaim_batch``;
#: not ``lru_scan``, paid under the global-lru policy only)
COMPILED_COSTS = frozenset(
    {
        "access",
        "fault",
        "ecreate",
        "eadd",
        "eextend",
        "einit",
        "eremove",
        "eaug",
        "eldu",
        "eblock",
        "etrack",
        "ewb",
        "emodpr",
        "emodt",
        "reclaim_batch",
        "kernel_step",
    }
)


@dataclass(frozen=True)
class Rule:
    """Whether the compiled engine runs a field's value, an option or a state.

    *kind* "always": supported whatever the value (*reason* says why it may be);
    "never": not supported when set (not None, False or empty; *reason* is the refusal);
    "when": *check* returns True where not supported (*reason* is the refusal).  A
    ``dynamic.*`` rule's *check* takes ``(sim, inst)`` (*scope* "instance", each live
    enclave instance), ``(sim, threads, builds)`` ("run"), or is None: the scheduler's state,
    judged by :func:`~epcsim.compiled.engine.take_over` itself through :func:`refusal`.
    """

    kind: Literal["always", "never", "when"]
    reason: str
    check: Callable[..., bool] | None = None
    scope: Literal["value", "instance", "run"] = "value"

    def judge(self, value: Any, sc: Scenario | None = None) -> str | None:
        """The refusal for *value* (of a field of *sc*, or an option), None if supported."""
        if self.kind == "always":
            return None
        if self.kind == "never":
            return self.reason if _is_set(value) else None
        assert self.check is not None
        return self.reason if self.check(value, sc) else None


def _is_set(value: Any) -> bool:
    return value is not None and value is not False and value != [] and value != {}


#: supported whatever the value
ALWAYS = Rule("always", "supported")


def always(why: str) -> Rule:
    """Supported whatever the value; *why*: what the compiled engine does with it."""
    return Rule("always", why)


def never(reason: str) -> Rule:
    """Not supported when set; *reason* is the refusal."""
    return Rule("never", reason)


def when(
    check: Callable[..., bool],
    reason: str,
    scope: Literal["value", "instance", "run"] = "value",
) -> Rule:
    """Not supported where *check* is True; *reason* is the refusal."""
    return Rule("when", reason, check, scope)


# --- the predicates ---------------------------------------------------------------------

_NO_ENCLAVE = "the compiled engine runs enclave threads (the scenario has none)"
#: a vEPC owner allocates its pages (a running actor: the offer is refused meanwhile),
#: then holds them to the end: never on an LRU, they are in the pool's arrays the core
#: reads as any allocated page
_VEPC = "a vEPC owner's pages are allocated and held, never reclaimed (the pool's arrays)"
#: the EDMM operations (EMODPR, EMODT to TRIM, EREMOVE with sgx_reclaim_direct() before
#: every page) run on the reference: the core hands the threads back when one is due
#: (RC_EDMM), and they are not offered until it is done (dynamic.edmm_due)
_EDMM = "the reference runs a thread's EDMM operations between two core runs"
#: a fault that adds the pages a watcher waits for ends the core's run of steps: the
#: reference starts the operation (RC_WATCH, EN_WATCH), a foreign event from there
_AT_WHEN = "the core returns after the fault that adds the pages watched (RC_WATCH)"
#: a group's end is a thread's end step, which runs on the reference between core runs:
#: what it starts is a foreign event
_AFTER = "started at a thread's end step (the reference's): a foreign event"
#: a timed operation is an actor the core does not run: it returns before it
#: (RC_FOREIGN), the reference runs it, the threads are offered again
_AT = "a foreign event: the reference engine runs the operation between two core runs"
#: the core returns before a reclaim phase whose backing charges may exceed a
#: memory.max (mem_cgroup_batch_fits, RC_MEMCG): the reference runs the memcg OOM path
_OOM = "a reclaim phase whose backing may not fit is the reference's step (RC_MEMCG)"
_NO_EPISODES = "the compiled engine does not record reclaim episodes (episode_log)"
_THREADS = f"the compiled engine runs at most {MAX_THREADS} enclave threads"


def no_enclave(value: list, sc: Scenario | None) -> bool:
    """No ``[[enclave]]`` at all: nothing for the compiled engine to run."""
    return not value


def too_many_threads(value: int, sc: Scenario | None) -> bool:
    """More than MAX_THREADS enclave threads (count x threads summed over the groups)."""
    assert sc is not None
    return sum(e.count * e.threads for e in sc.enclave) > MAX_THREADS


def policy_not_compiled(value: str, sc: Scenario | None) -> bool:
    """A reclaim design (``host.policy``, epcsim.policies) the compiled engine does not
    implement: it implements the series' v16, v14 and v13 and limit-only
    (COMPILED_POLICIES)."""
    return value not in COMPILED_POLICIES


def extensions_named(value: list[str], sc: Scenario | None) -> bool:
    """An extension in no kernel (``host.extensions``, epcsim.kernel.rfc_knobs): the
    compiled engine runs none."""
    return bool(value)


def cost_not_compiled(value: Mapping[str, Any], sc: Scenario | None) -> bool:
    """A ``[host.costs]`` key the core does not read (COMPILED_COSTS)."""
    return any(k not in COMPILED_COSTS for k in value)


# --- the state at take-over (public members of the simulation and the kernel model) -----


def _live(inst: Instance) -> bool:
    """Started and not ended (an instance not started yet holds nothing: its start is
    a foreign event before which the core returns, RC_FOREIGN)."""
    return inst.started_ns >= 0 and inst.ended_ns < 0


def still_building(sim: Simulation, inst: Instance) -> bool:
    """A live instance has no task yet, or (an enclave process) no enclave yet.  (A vEPC
    owner has none: once its actor has allocated its pages it holds them.)"""
    if not _live(inst):
        return False
    return inst.task is None or (inst.encl is None and not isinstance(inst.spec, VepcSpec))


def task_not_running(sim: Simulation, inst: Instance) -> bool:
    """A live instance's task has exited or has a signal pending."""
    t = inst.task
    return _live(inst) and t is not None and (t.exited or t.signal_pending)


def mapped_by_another_mm(sim: Simulation, inst: Instance) -> bool:
    """The enclave is mapped by an mm other than its task's, or released."""
    t, e = inst.task, inst.encl
    if not _live(inst) or t is None or e is None:
        return False
    return e.mm_list != [t.pid] or e.nr_live_mms != 1 or e.released


def not_initialised(sim: Simulation, inst: Instance) -> bool:
    """The enclave has not been through EINIT."""
    e = inst.encl
    return _live(inst) and e is not None and not e.flags & SGX_ENCL_INITIALIZED


def va_pages_inconsistent(sim: Simulation, inst: Instance) -> bool:
    """A VA page in use is not in EPC."""
    e = inst.encl
    if not _live(inst) or e is None:
        return False
    return any(p.epc < 0 and p.no in e.va_pages for p in e.va_all)


def foreign_enclave(sim: Simulation, threads: list, builds: list) -> bool:
    """An enclave none of the taken-over threads runs nor builds holds EPC pages (not
    released)."""
    ours = {id(t.encl) for t in threads} | {id(b.encl) for b in builds}
    return any(not e.released and id(e) not in ours for e in sim.host.encls)


def build_under_policy(sim: Simulation, threads: list, builds: list) -> bool:
    """An EADD build is taken over under a reclaim design other than the series' v16
    (the core runs a build's synchronous reclaim as v16 does, without policy hooks)."""
    return bool(builds) and sim.host.policy is not None


def cgroup_busy(sim: Simulation, threads: list, builds: list) -> bool:
    """A cgroup is offline or freed.  (Its reclaim work, queued or running, is taken
    over with the worker: ``dynamic.reclaimer_busy``.)"""
    for sgx_cg in sim.host.sgx_cgroups:
        if sgx_cg is None:
            continue
        cg = sgx_cg.cg
        if not cg.online or cg.freed:
            return True
    return False


def edmm_due(sim: Simulation, threads: list, builds: list) -> bool:
    """A thread's EDMM operations are due or running (its ``ThreadRun.edmm_at`` is set
    and reached): the reference runs them first."""
    return any(t.run.edmm_at is not None and t.st.accesses >= t.run.edmm_at for t in threads)


def episodes_logged(sim: Simulation, threads: list, builds: list) -> bool:
    """The run records its reclaim episodes (``host.episode_log``, the option
    ``episode_log``): the compiled engine does not."""
    return sim.host.episode_log is not None


# --- the rules --------------------------------------------------------------------------

_NOT_USED = "not used by the simulation's events"
_SAME = "read before the compiled engine takes over (the same in both engines)"

RULES: dict[str, Rule] = {
    # refusals first, in the order they are reported
    "enclave": when(no_enclave, _NO_ENCLAVE),
    "vepc": always(_VEPC),
    "vepc[].name": always(_VEPC),
    "vepc[].cgroup": always(_VEPC),
    "vepc[].pages": always(_VEPC),
    "vepc[].start": always(_AFTER + " (or a time, or an [[at]] start)"),
    "enclave[].program": always(
        "the kselftest program's ADD_PAGES loops run compiled (EADD builds, offered at "
        "their pages' ends); the rest of the program on the reference"
    ),
    "enclave[].edmm": always(_EDMM),
    "enclave[].edmm.restrict_pages": always(_EDMM),
    "enclave[].edmm.remove_pages": always(_EDMM),
    "enclave[].edmm.at_access": always(_EDMM + " (runs of hits stop at it: TH_EDMM)"),
    "enclave[].start": always(_AFTER + " (or a time, or an [[at]] start)"),
    "enclave[].threads": when(too_many_threads, _THREADS),
    "enclave[].count": when(too_many_threads, _THREADS),
    "at": always(_AT),
    "at[].time": always(_AT),
    "at[].after": always(_AT + " (started when its group starts, a reference step)"),
    "at[].when": always(_AT_WHEN),
    "at[].when.enclave": always(_AT_WHEN),
    "at[].when.added": always(_AT_WHEN),
    "at[].write": always(
        _AT + "; what it changes (limits, memory.max, cgroup files) is packed again and "
        "judged by the dynamic rules at the next offer"
    ),
    "at[].write.path": always(_AT),
    "at[].write.value": always(_AT),
    "at[].mkdir": always(_AT + " (the cgroups are packed again at the next offer)"),
    "at[].rmdir": always(_AT + " (an offline cgroup refuses: dynamic.cgroup_busy)"),
    "at[].kill": always(_AT + " (a task with a signal pending refuses until it ends)"),
    "at[].start": always(_AT),
    "at[].migrate": always(_AT + " (the task's cgroup is packed again at the next offer)"),
    "at[].migrate.enclave": always(_AT),
    "at[].migrate.cgroup": always(_AT),
    "cgroup[].memory_max": always(_OOM),
    "host.policy": when(
        policy_not_compiled,
        "the compiled engine runs the policies v16, v14, v13 and limit-only (epcsim.policies)",
    ),
    "host.extensions": when(
        extensions_named,
        "the compiled engine runs no extension (host.extensions: epcsim.kernel.rfc_knobs)",
    ),
    "host.experiments.no_age": never(
        "the compiled engine does not run the experiment no_age (its age test is the "
        "kernel's sgx_reclaimer_age())"
    ),
    "host.costs{}": when(cost_not_compiled, "the compiled engine does not read that cost"),
    # supported
    "name": always(_NOT_USED),
    "description": always(_NOT_USED),
    "source": always(_NOT_USED),
    "sweep": always("epcsim sweep's grid and seeds: not part of the scenario a run simulates"),
    "sweep.grid{}": always("read by epcsim sweep only"),
    "sweep.seeds": always("read by epcsim sweep only"),
    "host": always("its fields are judged one by one"),
    "host.epc": always("the core runs over the kernel model's EPC arrays"),
    "host.sections": always("the core allocates from each section (NUMA node) in turn"),
    "host.cpus": always("the core models each thread's CPU and waits for a busy one"),
    "host.seed": always("the accesses are drawn from the same random streams"),
    "host.misc": always("the core charges the root when the misc controller is off"),
    "host.sgx2": always(_SAME + ": EAUG or EADD builds"),
    "host.duration": always("the core stops at the time limit, mid-batch if need be"),
    "host.sample_interval": always("the core samples at the same times"),
    "host.experiments": always("each experiment is judged by its own rule"),
    "host.experiments.fault_unreferenced": always("the core models the experiment"),
    "cgroup": always("the core runs any cgroup tree"),
    "cgroup[].path": always("the core runs any cgroup tree"),
    "cgroup[].max": always("the core models misc.max charges and per-cgroup reclaim"),
    "enclave[].name": always(_NOT_USED),
    "enclave[].cgroup": always("the core charges each enclave's cgroup"),
    "enclave[].size": always(_SAME),
    "enclave[].build": always(_SAME),
    "enclave[].workload{}": always("the core draws the accesses through the same pattern"),
    "expect": always("judged on the result, after the run"),
    "expect[].name": always("judged on the result, after the run"),
    "expect[].enclaves": always("judged on the result, after the run"),
    "expect[].outcome": always("judged on the result, after the run"),
    "expect[].quantifier": always("judged on the result, after the run"),
    "expect[].ignore_killed": always("judged on the result, after the run"),
    "expect[].file": always("judged on the result, after the run"),
    "expect[].equals": always("judged on the result, after the run"),
    # the options of epcsim.run() and Simulation
    "option.scenario": always("judged by the scenario's own rules"),
    "option.seed": always("the accesses are drawn from the same random streams"),
    "option.overrides": always("applied to the scenario before it is judged"),
    "option.progress": always("the core reports progress at each hand-over"),
    "option.engine": always("chooses the engine"),
    "option.out": always("the result is written after the run"),
    "option.report": always("the report is built after the run"),
    "option.force": always("about the run directory only"),
    "option.episode_log": never(_NO_EPISODES),
    # the state when the first enclave thread runs (epcsim.compiled.engine.take_over)
    # ksgxd and the workers are taken over at any of their yield points, from the
    # ReclaimerTrack each keeps (epcsim.kernel.resume); refused: a policy's reclaim hook
    # that keeps none, or flags that disagree with the actors on the heap
    "dynamic.reclaimer_busy": Rule(
        "when",
        "ksgxd or a reclaim worker was at a point the compiled engine cannot take over",
    ),
    # a busy reclaimer whose next phase may charge backing over a memory.max: the core
    # would hand it back before that step (RC_MEMCG), so the offer waits (back-off)
    "dynamic.memcg_phase": Rule(
        "when",
        "a reclaimer's next phase may charge backing over a memory.max (memcg OOM path)",
    ),
    "dynamic.other_actors": Rule(
        "when", "other actors were running when the enclave threads were offered"
    ),
    "dynamic.no_sampler": Rule("when", "the sampler is not scheduled"),
    "dynamic.still_building": when(
        still_building,
        "an enclave was still being built when the first enclave thread ran",
        "instance",
    ),
    "dynamic.task_not_running": when(task_not_running, "a task is not running", "instance"),
    "dynamic.mapped_by_another_mm": when(
        mapped_by_another_mm, "an enclave is mapped by another mm", "instance"
    ),
    "dynamic.not_initialised": when(not_initialised, "an enclave is not initialised", "instance"),
    "dynamic.va_pages_inconsistent": when(
        va_pages_inconsistent, "an enclave's VA pages are inconsistent", "instance"
    ),
    "dynamic.foreign_enclave": when(
        foreign_enclave, "an enclave outside the running threads holds EPC pages", "run"
    ),
    "dynamic.build_policy": when(
        build_under_policy,
        "an EADD build runs under a reclaim design other than v16 (host.policy)",
        "run",
    ),
    "dynamic.cgroup_busy": when(cgroup_busy, "a cgroup is offline or freed", "run"),
    "dynamic.episode_log": when(episodes_logged, _NO_EPISODES, "run"),
    "dynamic.edmm_due": when(edmm_due, "a thread's EDMM operations were due or running", "run"),
}

_ORDER = {k: i for i, k in enumerate(RULES)}


def refusal(key: str) -> str:
    """The reason of rule *key* (for the conditions take_over judges itself)."""
    return RULES[key].reason


# --- the schema -------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> X (other unions are left as they are)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_keys(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, Any]]:
    """(key, field name, unwrapped type) of each field of *model*."""
    for name, info in model.model_fields.items():
        tp = _unwrap(info.annotation)
        key = prefix + name
        if typing.get_origin(tp) is dict:
            key += "{}"
        yield key, name, tp


def schema_keys(model: type[BaseModel] = Scenario, prefix: str = "") -> list[str]:
    """The key of every field of the scenario schema, walked recursively (the form is in
    the module docstring)."""
    out = []
    for key, _, tp in _field_keys(model, prefix):
        out.append(key)
        if (sub := _model(tp)) is not None:
            out += schema_keys(sub, key + ".")
        elif typing.get_origin(tp) is list and (sub := _model(typing.get_args(tp)[0])):
            out += schema_keys(sub, key + "[].")
    return out


def _refusals(m: BaseModel, prefix: str, sc: Scenario, out: list[tuple[int, str]]) -> None:
    for key, name, _ in _field_keys(type(m), prefix):
        value = getattr(m, name)
        rule = RULES.get(key)
        if rule is None:
            out.append((-1, f"{key} is not declared supported by the compiled engine"))
            continue
        why = rule.judge(value, sc)
        if why is not None:
            out.append((_ORDER[key], why))
        elif isinstance(value, BaseModel):
            _refusals(value, key + ".", sc, out)
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, BaseModel):
                    _refusals(v, key + "[].", sc, out)


def static_ineligibility(sc: Scenario) -> str | None:
    """Why the compiled engine cannot run *sc* (None if it can, subject to the state at
    the first enclave thread's first step): the first refusal of the fields' rules, a
    field without a rule first."""
    out: list[tuple[int, str]] = []
    _refusals(sc, "", sc, out)
    return min(out)[1] if out else None


def option_ineligibility(options: Mapping[str, Any]) -> str | None:
    """Why the compiled engine cannot run with these options of :func:`epcsim.run` or
    ``Simulation`` (None if it can); an option without a rule is not supported."""
    for name, value in options.items():
        rule = RULES.get(f"option.{name}")
        if rule is None:
            return f"option {name} is not declared supported by the compiled engine"
        why = rule.judge(value)
        if why is not None:
            return why
    return None


#: the rules with a check, in RULES' order
_DYNAMIC = [r for r in RULES.values() if r.check is not None]


def dynamic_ineligibility(sim: Simulation, threads: list, builds: Sequence = ()) -> str | None:
    """Why the compiled engine cannot take the run over now, with *threads* and the EADD
    builds *builds* (``BuildRun``: each at a page's end) (None if it can): the
    ``dynamic.*`` rules over each enclave instance in turn (an instance being built is
    not initialised, and need not be), then over the run.  (The scheduler's own state
    is judged by take_over() before: ``dynamic.reclaimer_busy``, ``other_actors``,
    ``no_sampler``.)"""
    per_inst = [r for r in _DYNAMIC if r.scope == "instance"]
    building = {id(b.inst) for b in builds}
    skip = RULES["dynamic.not_initialised"]
    for inst in sim.instances.values():
        if not _live(inst):  # every instance rule holds of live instances only
            continue
        for rule in per_inst:
            if rule is skip and id(inst) in building:
                continue
            if rule.check(sim, inst):  # type: ignore[misc]
                return rule.reason
    blist = list(builds)
    for rule in _DYNAMIC:
        if rule.scope == "run" and rule.check(sim, threads, blist):  # type: ignore[misc]
            return rule.reason
    return None
