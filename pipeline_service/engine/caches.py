"""The engine's in-memory caches, in one object handed to the components that use them.

Rules every cache follows (docs/ARCHITECTURE.md, "Caches change only at commit"):
* it is bounded (entries, or steps for plans), so memory is flat in the number and
  size of tasks;
* it is changed in a transaction's ``on_commit`` callback, never inline: ``atomic()``
  may run a body twice, and a rolled-back version number may be stored later by
  another run;
* what it holds is a decode of the stored text (nobody else's object), so a handler
  or a caller changing its copy changes nothing here.
Each cache's own rule is beside it.
"""
from typing import Any

from cachetools import LRUCache, TTLCache

from ..dag import Dag
from .records import TaskPlan

# task plans, bounded by their total number of steps (~0.6 KB each): fair dispatch keeps a
# task of every tenant with work in flight, and an LRU cache smaller than the tasks in
# flight hits nothing (each step then re-reads its task's plan: 2,000 tenants ran at 40%
# of 4).  ~25 MB at the bound.
PLAN_CACHE_STEPS = 40_960
ARTIFACT_CACHE_SIZE = 4096  # recent inputs and outputs made here
DEFINITION_CACHE_SIZE = 256
# a pipeline definition is read by a submit at most once per this many seconds (per
# process): an edit made in pipeline_core reaches new tasks within it (docs/SEMANTICS.md)
DEFINITION_TTL_SECONDS = 1.0
BLOCKER_MEMORY = 65536   # waiting steps whose unfinished dependency is remembered (Progress)

TaskKey = tuple[str, str]                 # (tenant, task)
ArtifactKey = tuple[str, str, str, int]   # (tenant, task, step, version)


class EngineCaches:
    def __init__(self) -> None:
        # (tenant, task) -> TaskPlan: immutable after submit; dropped when the task ends
        self.plans: LRUCache[TaskKey, TaskPlan] = LRUCache(PLAN_CACHE_STEPS, getsizeof=lambda plan: plan.size)
        # (tenant, task, step, version) -> input made here, until the step is claimed
        self.inputs: LRUCache[ArtifactKey, Any] = LRUCache(ARTIFACT_CACHE_SIZE)
        # (tenant, task, step, version) -> output stored here, for the inputs it feeds
        self.outputs: LRUCache[ArtifactKey, Any] = LRUCache(ARTIFACT_CACHE_SIZE)
        # pipeline id -> Dag as defined; dropped when define_pipeline commits here
        self.definitions: TTLCache[str, Dag] = TTLCache(DEFINITION_CACHE_SIZE, DEFINITION_TTL_SECONDS)
        # (tenant, task, step) -> index of a dependency not succeeded when last looked at: a
        # hint only (a wrong one costs a read), so it is kept even if its transaction rolls back
        self.blockers: LRUCache[tuple[str, str, str], int] = LRUCache(BLOCKER_MEMORY)
        # tenants believed to have ready steps: added when steps become ready here (at commit),
        # removed by a claim that finds none of theirs (see claiming.Claimer)
        self.ready_tenants: set[str] = set()

    def remember_plan(self, key: TaskKey, plan: TaskPlan) -> None:
        if plan.size <= self.plans.maxsize:  # a larger DAG is read when needed, never cached
            self.plans[key] = plan

    def forget_plan(self, key: TaskKey) -> None:
        self.plans.pop(key, None)

    def artifact(self, kind: str, key: ArtifactKey, content: Any) -> None:
        (self.inputs if kind == "input" else self.outputs)[key] = content
