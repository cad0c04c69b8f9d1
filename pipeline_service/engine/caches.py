"""The engine's in-memory caches, in one object handed to the components that use them.

Rules every cache follows (docs/ARCHITECTURE.md, "Caches change only at commit"):
* it is bounded (entries, or steps for plans; the artifact caches in bytes as well), so
  memory is flat in the number and size of tasks;
* it is changed in a transaction's ``on_commit`` callback, never inline: ``atomic()``
  may run a body twice, and a rolled-back version number may be stored later by
  another run;
* what it holds is a decode of the stored text (nobody else's object), so a handler
  or a caller changing its copy changes nothing here.
Each cache's own rule is beside it.
"""

from cachetools import LRUCache, TTLCache

from ..dag import Dag
from ..exceptions import InvalidInputError
from .records import InputRecipe, TaskPlan

# task plans, bounded by their total number of steps (~0.6 KB each; params count as steps of
# 600 bytes, so the bound holds in bytes too): fair dispatch keeps a
# task of every tenant with work in flight, and an LRU cache smaller than the tasks in
# flight hits nothing (each step then re-reads its task's plan: 2,000 tenants ran at 40%
# of 4).  ~25 MB at the bound.
PLAN_CACHE_STEPS = 40_960
ARTIFACT_CACHE_SIZE = 4096  # recent inputs and outputs made here: entries at most, in each cache
# ... and bytes at most (characters of JSON text), per cache: 4,096 outputs of 20 MB would be
# 80 GB.  The service's ``cache_bytes`` option (docs/OPERATIONS.md); an entry counts as at
# least cache_bytes / ARTIFACT_CACHE_SIZE, which keeps the entry bound; one larger than
# 1/LARGEST_SHARE of the cache is not kept (it is read from the database when needed)
ARTIFACT_CACHE_BYTES = 64 * 1024 * 1024
LARGEST_SHARE = 16
MIN_CACHE_BYTES = 64 * 1024
MAX_CACHE_BYTES = 1 << 40
DEFINITION_CACHE_SIZE = 256
# a pipeline definition is read by a submit at most once per this many seconds (per
# process): an edit made in pipeline_core reaches new tasks within it (docs/SEMANTICS.md)
DEFINITION_TTL_SECONDS = 1.0
BLOCKER_MEMORY = 65536   # waiting steps whose unfinished dependency is remembered (Progress)

TaskKey = tuple[str, str]                 # (tenant, task)
ArtifactKey = tuple[str, str, str, int]   # (tenant, task, step, version)


def check_cache_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_CACHE_BYTES <= value <= MAX_CACHE_BYTES:
        raise InvalidInputError(f"cache_bytes must be a whole number of bytes from {MIN_CACHE_BYTES:,} to "
                                f"{MAX_CACHE_BYTES:,}, got {value!r:.40}")
    return value


def _recipe_size(recipe: InputRecipe) -> int:
    return len(recipe.text or "") + 64 * len(recipe.lineage or ())


class EngineCaches:
    def __init__(self, cache_bytes: int = ARTIFACT_CACHE_BYTES) -> None:
        self.cache_bytes = check_cache_bytes(cache_bytes)
        least = max(1, cache_bytes // ARTIFACT_CACHE_SIZE)
        # (tenant, task) -> TaskPlan: immutable after submit; dropped when the task ends
        self.plans: LRUCache[TaskKey, TaskPlan] = LRUCache(PLAN_CACHE_STEPS, getsizeof=lambda plan: plan.weight)
        # (tenant, task, step, version) -> what an input made here is made from, until the step is claimed
        self.inputs: LRUCache[ArtifactKey, InputRecipe] = LRUCache(
            cache_bytes, getsizeof=lambda recipe: max(least, _recipe_size(recipe)))
        # (tenant, task, step, version) -> the JSON text of an output stored here, for the inputs it
        # feeds (text, not objects: each input decodes its own copy, and its size is known)
        self.outputs: LRUCache[ArtifactKey, str] = LRUCache(cache_bytes, getsizeof=lambda text: max(least, len(text)))
        # pipeline id -> Dag as defined; dropped when define_pipeline commits here
        self.definitions: TTLCache[str, Dag] = TTLCache(DEFINITION_CACHE_SIZE, DEFINITION_TTL_SECONDS)
        # (tenant, task, step) -> index of a dependency not succeeded when last looked at: a
        # hint only (a wrong one costs a read), so it is kept even if its transaction rolls back
        self.blockers: LRUCache[tuple[str, str, str], int] = LRUCache(BLOCKER_MEMORY)
        # tenants believed to have ready steps: added when steps become ready here (at commit),
        # removed by a claim that finds none of theirs (see claiming.Claimer)
        self.ready_tenants: set[str] = set()

    def remember_plan(self, key: TaskKey, plan: TaskPlan) -> None:
        if plan.weight <= self.plans.maxsize:  # a larger plan is read when needed, never cached
            self.plans[key] = plan

    def forget_plan(self, key: TaskKey) -> None:
        self.plans.pop(key, None)

    def remember_input(self, key: ArtifactKey, recipe: InputRecipe) -> None:
        if _recipe_size(recipe) <= self.cache_bytes // LARGEST_SHARE:
            self.inputs[key] = recipe

    def remember_output(self, key: ArtifactKey, text: str) -> None:
        if len(text) <= self.cache_bytes // LARGEST_SHARE:
            self.outputs[key] = text
