-- Every SQL statement of the package, by name; parsed once, at import, by queries.py.
--
-- A block starts with a header line and runs to the next one:
--   -- name: <statement>             the statement, the same for every dialect
--   -- name: <statement> :<dialect>  its variant for one dialect (:mysql, :sqlite); a statement
--                                    with variants has one for each dialect, and may have one
--                                    for a Galera cluster (:galera, else its :mysql one is used)
--   -- fragment: <name>              text shared by statements, included as {{<name>}}
-- Lines starting with -- are comments, never sent.  Inside a statement:
--   ${name}$                sqlor's bound parameter (never $[name]$ text substitution)
--   $<name>$ ... $</name>$  sqlor's optional block: kept only when parameter `name` is not None
--   {task:<status>}, {step:<status>}, {schedule:<status>}  a status, quoted: a member of
--                           status.TaskStatus / StepStatus / ScheduleStatus
--   {steps:<group>}         the quoted statuses of status.STEP_STATUS_GROUPS[<group>], comma-separated
--   {tasks:<group>}         the same for status.TASK_STATUS_GROUPS[<group>]
--   {text:<name>}, {bytes:<name>}  parameter `name`, long text or bytes: on MySQL sent in base64
--                           and decoded here (CONVERT(FROM_BASE64(...) USING utf8mb4), FROM_BASE64(...):
--                           store/sqlor_adapter.py says why), on SQLite bound as it is
-- Statuses are never written as literals (tests/test_status.py holds the file to it): a new
-- status is added in status.py alone.
--
-- Counters are computed in one place each.  In Python (passed as parameters): attempt (the
-- claim token, claim_steps), output_version and input_version (the artifact versions written
-- with them), crash_count (the recovery decides on it).  In SQL: attempt_base (moved along
-- with attempt by a crash re-run or a hand-back, set to attempt by a re-run; Python only reads
-- it, to tell the attempt of the current run).
--
-- Every statement on an owned table is scoped by tenant_id except the executor's claim and
-- recovery statements, which work across tenants by design and touch rows by primary key
-- afterwards.
--
-- The per-task serialisation point of every state change is the task's row: whoever changes
-- the steps of tasks first locks their task rows (lock_tasks), by primary key in id order, so
-- two transactions never wait for each other's tasks in a cycle; then it reads the step rows it
-- needs (READ COMMITTED: the latest commits).  Step rows change only under that lock, except a
-- claim (pending -> running), which locks its rows with SKIP LOCKED and so never waits.  SQLite
-- serialises whole transactions.


-- ==== shared fragments ====

-- fragment: task_columns
id, tenant_id, pipeline_id, owner_id, title, status, error, created_at, updated_at, started_at, finished_at,
priority, schedule_id, scheduled_for

-- fragment: step_columns
id, tenant_id, task_id, step_name, step_type, depends_on, config, seq, status,
attempt, attempt_base, crash_count, input_version, input_stale, output_version, error, ready_at, owner,
lease_expires_at, started_at, finished_at, updated_at

-- fragment: progress
-- the progress counters of a task, computed from its step rows (never stored, never drift)
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id) AS n_total,
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
   AND s.status = {step:succeeded}) AS n_succeeded,
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
   AND s.status = {step:running}) AS n_running,
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
   AND s.status = {step:waiting}) AS n_waiting,
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
   AND s.status = {step:failed}) AS n_failed,
(SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
   AND s.status = {step:skipped}) AS n_skipped

-- fragment: list_filter
WHERE t.tenant_id = ${tenant_id}$
$<pipeline_id>$ AND t.pipeline_id = ${pipeline_id}$ $</pipeline_id>$
$<status>$ AND t.status = ${status}$ $</status>$

-- fragment: step_states
-- the states a state change needs, read under its task locks (see the file's head)
SELECT s.id, s.tenant_id, s.task_id, s.step_name, s.status, s.ready_at, s.attempt, s.attempt_base, s.owner,
    s.crash_count, s.input_version, s.input_stale, s.output_version, s.error, s.waiting_for,
    (SELECT t.status FROM pipeline_tasks t WHERE t.tenant_id = s.tenant_id AND t.id = s.task_id) AS task_status
FROM pipeline_task_steps s


-- ==== pipeline definitions (tables owned by pipeline_core) ====

-- name: get_pipeline_definition
-- no row: no such pipeline; one row with step_name NULL: a pipeline without steps
SELECT p.id AS pipeline, p.name, p.description, s.step_name, s.step_type, s.depends_on, s.config, s.seq
FROM pipelines p LEFT JOIN pipeline_steps s ON s.pipeline_id = p.id
WHERE p.id = ${pipeline_id}$ ORDER BY s.seq, s.step_name

-- name: insert_pipeline
INSERT INTO pipelines (id, name, description) VALUES (${id}$, ${name}$, ${description}$)

-- name: delete_pipeline_steps
DELETE FROM pipeline_steps WHERE pipeline_id = ${pipeline_id}$

-- name: delete_pipeline
DELETE FROM pipelines WHERE id = ${pipeline_id}$

-- name: insert_pipeline_step
INSERT INTO pipeline_steps (id, pipeline_id, step_name, step_type, depends_on, config, seq)
VALUES (${id}$, ${pipeline_id}$, ${step_name}$, ${step_type}$, ${depends_on}$, ${config}$, ${seq}$)


-- ==== tasks ====

-- name: insert_task
-- the unique keys (tenant_id, idempotency_key) and (tenant_id, schedule_id, scheduled_for) refuse
-- a second task for one key or one tick (NULL never clashes): Tasks.submit then reads the first
INSERT INTO pipeline_tasks (id, tenant_id, pipeline_id, owner_id, title, params, status,
    error, created_at, updated_at, started_at, finished_at, priority, idempotency_key, schedule_id, scheduled_for)
VALUES (${id}$, ${tenant_id}$, ${pipeline_id}$, ${owner_id}$, ${title}$, {text:params}, ${status}$,
    NULL, ${now}$, ${now}$, NULL, NULL, ${priority}$, ${idempotency_key}$, ${schedule_id}$, ${scheduled_for}$)

-- name: task_by_key
SELECT {{task_columns}}, params, {{progress}}
FROM pipeline_tasks t
WHERE t.tenant_id = ${tenant_id}$ AND t.idempotency_key = ${idempotency_key}$

-- name: set_task_parent
-- a child task (of a delegate step, engine/waiting.py): the task and step that delegated it
UPDATE pipeline_tasks SET parent_task_id = ${parent_task_id}$, parent_step = ${parent_step}$
WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$

-- name: get_task
SELECT {{task_columns}}, params, parent_task_id, parent_step, {{progress}}
FROM pipeline_tasks t
WHERE t.tenant_id = ${tenant_id}$ AND t.id = ${task_id}$

-- name: count_tasks
SELECT count(*) AS n FROM pipeline_tasks t {{list_filter}}

-- name: list_tasks
SELECT {{task_columns}}, {{progress}}
FROM pipeline_tasks t {{list_filter}}
ORDER BY t.created_at DESC, t.id DESC LIMIT ${limit}$ OFFSET ${offset}$

-- name: task_state
SELECT id, status, params, parent_task_id, parent_step FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$

-- name: task_lineage
-- one task of a chain of delegations (a child's parent_task_id names its parent's task)
SELECT id, pipeline_id, owner_id, priority, status, error, parent_task_id, parent_step FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$

-- name: task_children
-- the tasks delegated by a task's steps (a delegate step's child tasks)
SELECT id, parent_step, status FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND parent_task_id = ${task_id}$ ORDER BY created_at, id

-- name: unfinished_children
-- one level of a delegation tree: the unfinished child tasks of some tasks (a control change
-- locks a task together with these, engine/control.py); the `tenant_parent` index
SELECT id FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND parent_task_id IN (${task_ids}$) AND status NOT IN ({tasks:finished})

-- name: mark_tasks_started :mysql
-- the first claim of a root step marks its task started: status.TaskAction.START, whose only
-- change is pending -> running (a task paused before it started is paused, or running again
-- if resumed: hence the CASE) (by primary key, in id order: see lock_tasks)
UPDATE pipeline_tasks FORCE INDEX (PRIMARY)
SET status = CASE WHEN status = {task:pending} THEN {task:running} ELSE status END,
    started_at = ${now}$, updated_at = ${now}$
WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) AND started_at IS NULL ORDER BY id

-- name: mark_tasks_started :sqlite
UPDATE pipeline_tasks
SET status = CASE WHEN status = {task:pending} THEN {task:running} ELSE status END,
    started_at = ${now}$, updated_at = ${now}$
WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) AND started_at IS NULL

-- name: lock_tasks :mysql
-- task ids are unique: the two IN lists select exactly the tasks asked for
SELECT id FROM pipeline_tasks FORCE INDEX (PRIMARY)
WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) ORDER BY id FOR UPDATE

-- name: lock_tasks :galera
-- Galera certifies the rows a transaction writes, not those it locks (a FOR UPDATE lock holds on
-- its own node only): on a cluster the lock is a write, so that two nodes changing one task
-- conflict at COMMIT and one of them runs again (docs/OPERATIONS.md, "Galera")
UPDATE pipeline_tasks FORCE INDEX (PRIMARY) SET revision = COALESCE(revision, 0) + 1
WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) ORDER BY id

-- name: lock_tasks :sqlite
SELECT id FROM pipeline_tasks WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$)

-- name: task_progress
-- whether each task can still make progress, and how it ended if not: each EXISTS is one
-- lookup in the `task_status` index (tenant_id, task_id, status, ready_at); a waiting step keeps
-- its task going like a running one
SELECT t.tenant_id, t.id AS task_id,
  EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
    AND s.status IN ({steps:in_flight})) AS has_running,
  EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
    AND s.status = {step:pending} AND s.ready_at IS NOT NULL) AS has_ready,
  EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
    AND s.status = {step:failed}) AS has_failed,
  EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
    AND s.status IN ({steps:incomplete})) AS has_incomplete
FROM pipeline_tasks t WHERE t.id IN (${task_ids}$) AND t.tenant_id IN (${tenant_ids}$)

-- name: set_task_status
-- the transition is decided by status.task_transition; from_status fences it
UPDATE pipeline_tasks SET status = ${status}$, error = ${error}$, finished_at = ${finished_at}$, updated_at = ${now}$
WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$ AND status = ${from_status}$


-- ==== steps of a task ====

-- name: insert_step
INSERT INTO pipeline_task_steps ({{step_columns}}, priority)
VALUES (${id}$, ${tenant_id}$, ${task_id}$, ${step_name}$, ${step_type}$, ${depends_on}$, {text:config}, ${seq}$,
    {step:pending}, 0, 0, 0, ${input_version}$, 0, NULL, NULL, ${ready_at}$, NULL, NULL, NULL, NULL, ${now}$,
    ${priority}$)

-- name: get_steps
SELECT {{step_columns}}, error_trace, waiting_for FROM pipeline_task_steps
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$

-- name: get_step
SELECT {{step_columns}}, error_trace, waiting_for FROM pipeline_task_steps
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$

-- name: step_states
-- some steps by id (a finish: linear in what it touches, not in the task's size) ...
{{step_states}}
WHERE s.id IN (${ids}$) AND s.tenant_id IN (${tenant_ids}$)

-- name: tasks_step_states
-- ... or all steps of several small tasks (a finish: fewer round trips than picking steps)
{{step_states}}
WHERE s.tenant_id IN (${tenant_ids}$) AND s.task_id IN (${task_ids}$)

-- name: task_step_states
-- ... or all steps of one task (human control; not a locking read: see human control below)
{{step_states}}
WHERE s.tenant_id = ${tenant_id}$ AND s.task_id = ${task_id}$

-- name: failed_steps
SELECT step_name, error FROM pipeline_task_steps
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND status = {step:failed}


-- ==== the executor's cross-tenant statements ====

-- name: probe :mysql
-- one look per poll: is a step of the types this process can run ready now (`runnable`), or
-- when is the next one due (a retry delay); has a lease expired; when is the next tick of a
-- schedule due (`next_tick`: the first entry of the schedules' `due` (status, next_fire_at))?  Only the step types of this
-- process count: ready steps nobody here can run must not start a claim each poll (the pending
-- entries of `ready` (status, tenant_id, ready_at), a row read only for a step due, EXISTS
-- stops at the first match; `lease`.  MariaDB would rather scan the table when the pending
-- steps are a third of it, so the index is named there.)
SELECT
  EXISTS (SELECT 1 FROM pipeline_task_steps FORCE INDEX (pipeline_task_steps_ready)
    WHERE status = {step:pending} AND ready_at <= ${now}$ AND step_type IN (${step_types}$)) AS runnable,
  (SELECT MIN(ready_at) FROM pipeline_task_steps FORCE INDEX (pipeline_task_steps_ready)
    WHERE status = {step:pending} AND ready_at > ${now}$ AND step_type IN (${step_types}$)) AS next_ready,
  (SELECT MIN(lease_expires_at) FROM pipeline_task_steps WHERE status = {step:running}) AS next_expiry,
  -- when the first waiting step (of any type: waking one only makes it pending) is due: now or
  -- earlier, wake the due ones; later, probe then (the first `waiting` entry of `due` (status,
  -- ready_at) with a time — "Select tables optimized away" — however many steps wait)
  (SELECT MIN(ready_at) FROM pipeline_task_steps FORCE INDEX (pipeline_task_steps_due)
    WHERE status = {step:waiting}) AS next_due,
  (SELECT MIN(next_fire_at) FROM pipeline_schedules WHERE status = {schedule:active}) AS next_tick

-- name: probe :sqlite
SELECT
  EXISTS (SELECT 1 FROM pipeline_task_steps
    WHERE status = {step:pending} AND ready_at <= ${now}$ AND step_type IN (${step_types}$)) AS runnable,
  (SELECT MIN(ready_at) FROM pipeline_task_steps
    WHERE status = {step:pending} AND ready_at > ${now}$ AND step_type IN (${step_types}$)) AS next_ready,
  (SELECT MIN(lease_expires_at) FROM pipeline_task_steps WHERE status = {step:running}) AS next_expiry,
  (SELECT MIN(ready_at) FROM pipeline_task_steps WHERE status = {step:waiting}) AS next_due,
  (SELECT MIN(next_fire_at) FROM pipeline_schedules WHERE status = {schedule:active}) AS next_tick

-- name: tenants_with_ready_steps
-- a page of the tenants with ready steps, in tenant id order from the one after ${after}$: a
-- process serves every tenant in turn however many there are (fair dispatch); it reads the
-- `ready` (status, tenant_id, ready_at) entries of the page's tenants only
SELECT tenant_id, MIN(ready_at) AS oldest FROM pipeline_task_steps
WHERE status = {step:pending} AND tenant_id > ${after}$ AND ready_at <= ${now}$
GROUP BY tenant_id ORDER BY tenant_id LIMIT ${limit}$

-- name: select_ready_steps :mysql
-- the ready-step claim of one tenant: single-table (TiDB breaks SKIP LOCKED with joins),
-- served by its own index, `queue` (tenant_id, status, priority DESC, ready_at), read in its
-- order: the highest priority first, the oldest first within one; a claim sends one per tenant
-- it asks, all in one statement (UNION ALL: Transaction.fetch_union).  Priorities order a
-- tenant's own steps only: which tenants are asked, and for how many, is the claim's fairness
SELECT id, tenant_id, task_id, step_name, attempt, attempt_base, input_version, depends_on, waiting_for,
    woken_by
FROM pipeline_task_steps FORCE INDEX (pipeline_task_steps_queue)
WHERE status = {step:pending} AND tenant_id = ${tenant_id}$ AND ready_at <= ${now}$
AND step_type IN (${step_types}$)
ORDER BY priority DESC, ready_at LIMIT ${limit}$ FOR UPDATE SKIP LOCKED

-- name: select_ready_steps :sqlite
SELECT id, tenant_id, task_id, step_name, attempt, attempt_base, input_version, depends_on, waiting_for,
    woken_by
FROM pipeline_task_steps INDEXED BY pipeline_task_steps_queue
WHERE status = {step:pending} AND tenant_id = ${tenant_id}$ AND ready_at <= ${now}$
AND step_type IN (${step_types}$)
ORDER BY priority DESC, ready_at LIMIT ${limit}$

-- name: extend_leases
-- leases: extended by the owner's heartbeat, taken back by anyone once expired; only the steps
-- the owner runs now: a row it holds that no run of its own records any more (e.g. its outcome
-- was lost in an outage) keeps its lease running out
UPDATE pipeline_task_steps SET lease_expires_at = ${lease_expires_at}$
WHERE owner = ${owner}$ AND status = {step:running} AND id IN (${ids}$)

-- name: owned_running_steps
SELECT id, attempt FROM pipeline_task_steps WHERE owner = ${owner}$ AND status = {step:running} AND id IN (${ids}$)

-- name: expired_steps
SELECT id, tenant_id, task_id, step_name FROM pipeline_task_steps
WHERE status = {step:running} AND lease_expires_at < ${now}$ ORDER BY lease_expires_at LIMIT ${limit}$

-- name: recover_step
-- a crash re-run does not use up the retry budget (attempt_base moves along with attempt)
UPDATE pipeline_task_steps SET status = {step:pending}, ready_at = ${ready_at}$, owner = NULL,
    lease_expires_at = NULL, crash_count = ${crash_count}$, attempt_base = attempt_base + 1, updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND lease_expires_at < ${now}$

-- name: release_step
-- a graceful stop hands back a claim it will not finish: ready again at once, neither a failure
-- nor a crash (the retry budget stays: attempt_base moves along with attempt)
UPDATE pipeline_task_steps SET status = {step:pending}, ready_at = ${ready_at}$, owner = NULL,
    lease_expires_at = NULL, attempt_base = attempt_base + 1, updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND attempt = ${attempt}$ AND owner = ${owner}$

-- name: fail_lost_step
UPDATE pipeline_task_steps SET status = {step:failed}, error = ${error}$, error_trace = NULL, owner = NULL,
    lease_expires_at = NULL, crash_count = ${crash_count}$, finished_at = ${now}$, updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND lease_expires_at < ${now}$

-- name: claim_steps
-- the rows were just selected FOR UPDATE (SKIP LOCKED): this claims those of them whose next
-- attempt (the new claim token) is ${attempt}$
UPDATE pipeline_task_steps SET status = {step:running}, attempt = ${attempt}$, owner = ${owner}$,
    lease_expires_at = ${lease_expires_at}$, started_at = ${now}$, finished_at = NULL, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:pending}

-- name: succeed_steps
-- fenced by the claim token (attempt) and owner: a late result of a run whose claim was taken
-- away changes nothing (succeed_steps: checked on the locked rows); the steps whose new output
-- version is ${output_version}$
UPDATE pipeline_task_steps SET status = {step:succeeded}, output_version = ${output_version}$, error = NULL,
    error_trace = NULL, owner = NULL, lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:running}

-- name: fail_step
UPDATE pipeline_task_steps SET status = {step:failed}, error = ${error}$, error_trace = ${error_trace}$,
    owner = NULL, lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND attempt = ${attempt}$ AND owner = ${owner}$

-- name: requeue_step
-- a retry starts afresh: what an earlier attempt waited for is forgotten (an approval asks again)
UPDATE pipeline_task_steps SET status = {step:pending}, ready_at = ${ready_at}$, error = ${error}$,
    error_trace = ${error_trace}$, owner = NULL, lease_expires_at = NULL, waiting_for = NULL, woken_by = NULL,
    updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND attempt = ${attempt}$ AND owner = ${owner}$

-- name: make_steps_ready :mysql
-- steps become ready together with the input they will run on, in their task's place in the
-- queue (its submit time): the oldest task's ready steps are claimed first.  By primary key,
-- named (see "human control" below: never a locking scan of a secondary index)
UPDATE pipeline_task_steps FORCE INDEX (PRIMARY) SET ready_at = (SELECT t.created_at FROM pipeline_tasks t
    WHERE t.tenant_id = pipeline_task_steps.tenant_id AND t.id = pipeline_task_steps.task_id),
    input_version = ${input_version}$, input_stale = 0, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:pending} AND ready_at IS NULL

-- name: make_steps_ready :sqlite
UPDATE pipeline_task_steps SET ready_at = (SELECT t.created_at FROM pipeline_tasks t
    WHERE t.tenant_id = pipeline_task_steps.tenant_id AND t.id = pipeline_task_steps.task_id),
    input_version = ${input_version}$, input_stale = 0, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:pending} AND ready_at IS NULL

-- name: skip_steps
-- steps that will not run in this run of their task (their dependencies were all skipped): done,
-- so their task goes on
UPDATE pipeline_task_steps SET status = {step:skipped}, finished_at = ${now}$, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:pending} AND ready_at IS NULL

-- name: skip_steps_with_input
-- ... or their `when` was false: with the input it was evaluated on
UPDATE pipeline_task_steps SET status = {step:skipped}, input_version = ${input_version}$, input_stale = 0,
    finished_at = ${now}$, updated_at = ${now}$
WHERE id IN (${ids}$) AND status = {step:pending} AND ready_at IS NULL

-- ==== waiting steps (engine/waiting.py) ====
-- A waiting step holds no slot, lease or owner.  Its ready_at is when to look at it again (its
-- deadline; NULL: only what it waits for wakes it); waiting_for is what it waits for (JSON, as
-- the handler asked), woken_by what woke it (a signal's payload, a child task's end).

-- name: wait_step
-- fenced by the claim like every outcome; the attempt is not used up (attempt_base moves along:
-- the look after the wake is the same attempt).  A child task that ended while this step ran
-- left woken_by set: then it is due at once (ready_at is assigned before woken_by is cleared:
-- MySQL assigns left to right, SQLite from the old row)
UPDATE pipeline_task_steps SET status = {step:waiting},
    ready_at = CASE WHEN woken_by IS NOT NULL THEN ${now}$ ELSE ${ready_at}$ END, woken_by = NULL,
    waiting_for = ${waiting_for}$, owner = NULL, lease_expires_at = NULL, attempt_base = attempt_base + 1,
    error = NULL, error_trace = NULL, updated_at = ${now}$
WHERE id = ${id}$ AND status = {step:running} AND attempt = ${attempt}$ AND owner = ${owner}$

-- name: due_waiting_steps :mysql
-- a range of the `due` (status, ready_at) index, read in its order: the due entries only
SELECT id, tenant_id, task_id, step_name FROM pipeline_task_steps FORCE INDEX (pipeline_task_steps_due)
WHERE status = {step:waiting} AND ready_at <= ${now}$ ORDER BY ready_at LIMIT ${limit}$

-- name: due_waiting_steps :sqlite
-- (SQLite's planner takes `due` by itself: tests/test_waiting.py looks at its plan)
SELECT id, tenant_id, task_id, step_name FROM pipeline_task_steps
WHERE status = {step:waiting} AND ready_at <= ${now}$ ORDER BY ready_at LIMIT ${limit}$

-- name: wake_steps
-- due (or signalled): pending, to be looked at again; made ready next (make_steps_ready) in a
-- running task, held in a paused one (resume makes it ready)
UPDATE pipeline_task_steps SET status = {step:pending}, ready_at = NULL,
    woken_by = COALESCE(${woken_by}$, woken_by), updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status = {step:waiting}

-- name: wake_parent_step
-- a child task ended: the step of its parent that waits for it is due at once.  Written under the
-- child's task lock, never its parent's (see engine/waiting.py: no lock cycle); a step that runs
-- now (a look that may have just seen the child unfinished) keeps the mark for its next wait
UPDATE pipeline_task_steps SET woken_by = ${woken_by}$,
    ready_at = CASE WHEN status = {step:waiting} THEN ${now}$ ELSE ready_at END, updated_at = ${now}$
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$
AND status IN ({steps:in_flight})

-- name: skip_waiting_steps
UPDATE pipeline_task_steps SET status = {step:skipped}, updated_at = ${now}$
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND status = {step:pending}


-- ==== human control ====
-- Step rows are changed by primary key (ids read under the task lock), never through a locking
-- scan of a secondary index: that would lock index entries a claim under way must update while
-- waiting for the claim's rows (a deadlock).  A row a claim takes meanwhile is waited for, then
-- checked again by the WHERE.  On MariaDB the primary key is named: the claim locks its rows
-- through the `queue` index, and MariaDB would otherwise pick `ready` for a WHERE on status,
-- tenant_id and ready_at (hold_ready_steps: seen deadlocking with a claim's UPDATE).

-- name: hold_ready_steps :mysql
UPDATE pipeline_task_steps FORCE INDEX (PRIMARY) SET ready_at = NULL, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status = {step:pending} AND ready_at IS NOT NULL

-- name: hold_ready_steps :sqlite
UPDATE pipeline_task_steps SET ready_at = NULL, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status = {step:pending} AND ready_at IS NOT NULL

-- name: cancel_unfinished_steps :mysql
UPDATE pipeline_task_steps FORCE INDEX (PRIMARY) SET status = {step:cancelled}, ready_at = NULL, owner = NULL,
    lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status IN ({steps:cancellable})

-- name: cancel_unfinished_steps :sqlite
UPDATE pipeline_task_steps SET status = {step:cancelled}, ready_at = NULL, owner = NULL,
    lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status IN ({steps:cancellable})

-- name: reset_steps :mysql
-- a re-run: the retry budget starts again (attempt itself never decreases: it is the claim token)
UPDATE pipeline_task_steps FORCE INDEX (PRIMARY) SET status = {step:pending}, ready_at = NULL, error = NULL,
    error_trace = NULL, owner = NULL, lease_expires_at = NULL, attempt_base = attempt,
    input_stale = ${input_stale}$, waiting_for = NULL, woken_by = NULL, finished_at = NULL, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$

-- name: reset_steps :sqlite
UPDATE pipeline_task_steps SET status = {step:pending}, ready_at = NULL, error = NULL, error_trace = NULL,
    owner = NULL, lease_expires_at = NULL, attempt_base = attempt, input_stale = ${input_stale}$,
    waiting_for = NULL, woken_by = NULL, finished_at = NULL, updated_at = ${now}$
WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$

-- name: set_manual_output
UPDATE pipeline_task_steps SET status = {step:succeeded}, output_version = ${output_version}$,
    error = NULL, error_trace = NULL, ready_at = NULL, owner = NULL, lease_expires_at = NULL,
    finished_at = ${now}$, updated_at = ${now}$
WHERE id = ${id}$ AND tenant_id = ${tenant_id}$

-- name: set_manual_input
UPDATE pipeline_task_steps SET input_version = ${input_version}$, input_stale = 0, updated_at = ${now}$
WHERE id = ${id}$ AND tenant_id = ${tenant_id}$


-- ==== artifacts (inserted, never updated; deleted only by a purge: see below) ====
-- A step row's input_version / output_version is always the newest version of its kind, so the
-- next version is that + 1 (computed in Python); the unique index rejects a clash.  An artifact's
-- JSON text is in content, or compressed in packed (store/packing.py); an input the engine built
-- holds only its lineage (engine/inputs.py).

-- name: insert_artifact
INSERT INTO pipeline_artifacts (id, tenant_id, task_id, step_name, kind, version,
    content, packed, source, lineage, created_at)
VALUES (${id}$, ${tenant_id}$, ${task_id}$, ${step_name}$, ${kind}$, ${version}$, {text:content}, {bytes:packed},
    ${source}$, ${lineage}$, ${now}$)

-- name: get_artifact
-- it names its task: a read across tasks (fetch_union, a branch per artifact: the inputs and
-- outputs of a claim round's steps that are not cached, engine/recording.py) tells its rows apart
SELECT tenant_id, task_id, step_name, kind, version, content, packed, source, lineage, created_at
FROM pipeline_artifacts
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$
AND kind = ${kind}$ AND version = ${version}$

-- name: list_artifact_versions
SELECT kind, version, source, lineage, created_at FROM pipeline_artifacts
WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$
ORDER BY kind, version


-- ==== purge (engine/purge.py): whole finished tasks, or old artifact versions of finished tasks ====
-- A purge works in small batches of tasks, one transaction each: it locks the batch's task rows
-- (lock_tasks), checks under the lock that they are still finished (a modify may have re-opened
-- one), then deletes by task id or artifact id.  A crash loses at most the batch under way.

-- name: purge_candidates
-- a page of a tenant's finished tasks in id order after ${after}$: finished before
-- ${finished_before}$ (a whole-task purge), or with a step past ${keep_versions}$ versions
SELECT t.id FROM pipeline_tasks t
WHERE t.tenant_id = ${tenant_id}$ AND t.status IN ({tasks:finished}) AND t.id > ${after}$
$<finished_before>$ AND t.finished_at < ${finished_before}$ $</finished_before>$
$<keep_versions>$ AND EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id
    AND s.task_id = t.id AND (s.output_version > ${keep_versions}$ OR s.input_version > ${keep_versions}$))
$</keep_versions>$
ORDER BY t.id LIMIT ${limit}$

-- name: finished_tasks
-- which of these (locked) tasks are still finished, and not the child of a task that has not
-- ended (a delegate step may still have to read its outputs: engine/waiting.py)
SELECT t.id FROM pipeline_tasks t WHERE t.tenant_id = ${tenant_id}$ AND t.id IN (${task_ids}$)
AND t.status IN ({tasks:finished})
AND NOT EXISTS (SELECT 1 FROM pipeline_tasks p WHERE p.tenant_id = t.tenant_id AND p.id = t.parent_task_id
    AND p.status NOT IN ({tasks:finished}))

-- name: task_artifact_versions
SELECT id, task_id, step_name, kind, version, source, lineage FROM pipeline_artifacts
WHERE tenant_id = ${tenant_id}$ AND task_id IN (${task_ids}$)

-- name: count_task_steps
SELECT count(*) AS n FROM pipeline_task_steps WHERE tenant_id = ${tenant_id}$ AND task_id IN (${task_ids}$)

-- name: delete_artifacts
DELETE FROM pipeline_artifacts WHERE tenant_id = ${tenant_id}$ AND id IN (${ids}$)

-- name: delete_task_artifacts
DELETE FROM pipeline_artifacts WHERE tenant_id = ${tenant_id}$ AND task_id IN (${task_ids}$)

-- name: delete_task_steps
DELETE FROM pipeline_task_steps WHERE tenant_id = ${tenant_id}$ AND task_id IN (${task_ids}$)

-- name: delete_tasks
DELETE FROM pipeline_tasks WHERE tenant_id = ${tenant_id}$ AND id IN (${task_ids}$)
AND status IN ({tasks:finished})


-- ==== the server's limits ====

-- name: max_allowed_packet :mysql
SELECT @@max_allowed_packet AS max_packet

-- name: max_allowed_packet :sqlite
SELECT NULL AS max_packet


-- ==== the host's code labels (appbase's appcodes tables), written by appcodes.load_codes ====

-- name: delete_appcodes_kv
DELETE FROM appcodes_kv WHERE parentid IN (${ids}$)

-- name: delete_appcodes
DELETE FROM appcodes WHERE id IN (${ids}$)

-- name: insert_appcode
INSERT INTO appcodes (id, name, hierarchy_flg) VALUES (${id}$, ${name}$, ${hierarchy_flg}$)

-- name: insert_appcode_kv
INSERT INTO appcodes_kv (id, parentid, k, v) VALUES (${id}$, ${parentid}$, ${k}$, ${v}$)


-- ==== schedules (engine/schedules.py) ====
-- A tick creates its task and advances its schedule in one transaction, the schedule's row
-- locked first; the unique key (tenant_id, schedule_id, scheduled_for) of pipeline_tasks is
-- the last guard against a second task for one tick.  Lock order: a schedule row, then the
-- task rows of a cancel_previous (as every task state change: lock_tasks), never the reverse.

-- fragment: schedule_columns
id, tenant_id, pipeline_id, owner_id, title, params, cron, every_seconds, at_time, timezone, overlap,
catch_up, priority, status, next_fire_at, last_task_id, last_fired_at, queued_tick, created_at, updated_at

-- name: insert_schedule
INSERT INTO pipeline_schedules ({{schedule_columns}})
VALUES (${id}$, ${tenant_id}$, ${pipeline_id}$, ${owner_id}$, ${title}$, ${params}$, ${cron}$, ${every_seconds}$,
    ${at_time}$, ${timezone}$, ${overlap}$, ${catch_up}$, ${priority}$, ${status}$, ${next_fire_at}$, NULL, NULL,
    NULL, ${now}$, ${now}$)

-- name: lock_schedule :mysql
SELECT {{schedule_columns}} FROM pipeline_schedules
WHERE tenant_id = ${tenant_id}$ AND id = ${schedule_id}$ FOR UPDATE

-- name: lock_schedule :sqlite
SELECT {{schedule_columns}} FROM pipeline_schedules WHERE tenant_id = ${tenant_id}$ AND id = ${schedule_id}$

-- name: count_schedules
SELECT count(*) AS n FROM pipeline_schedules WHERE tenant_id = ${tenant_id}$

-- name: list_schedules
SELECT {{schedule_columns}} FROM pipeline_schedules WHERE tenant_id = ${tenant_id}$
ORDER BY created_at DESC, id DESC LIMIT ${limit}$ OFFSET ${offset}$

-- name: schedule_runs
-- the last runs of one schedule (a list asks for a page of schedules in one statement: fetch_union)
SELECT schedule_id, id, status, scheduled_for, created_at, finished_at FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND schedule_id = ${schedule_id}$
ORDER BY scheduled_for DESC LIMIT ${limit}$

-- name: due_schedules :mysql
-- the executor's tick (across tenants, like the claim): due schedules, oldest tick first, from
-- the `due` (status, next_fire_at) index; rows another process is firing are skipped
SELECT {{schedule_columns}} FROM pipeline_schedules FORCE INDEX (pipeline_schedules_due)
WHERE status = {schedule:active} AND next_fire_at <= ${now}$
ORDER BY next_fire_at LIMIT ${limit}$ FOR UPDATE SKIP LOCKED

-- name: due_schedules :sqlite
SELECT {{schedule_columns}} FROM pipeline_schedules
WHERE status = {schedule:active} AND next_fire_at <= ${now}$ ORDER BY next_fire_at LIMIT ${limit}$

-- name: tasks_status
-- the status of the last tasks of the schedules a tick looks at (overlap)
SELECT id, status FROM pipeline_tasks WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$)

-- name: advance_schedule
-- a tick, by primary key on the locked row: the next fire time, and the last task if one was made
UPDATE pipeline_schedules SET status = ${status}$, next_fire_at = ${next_fire_at}$,
    last_task_id = ${last_task_id}$, last_fired_at = ${last_fired_at}$, queued_tick = ${queued_tick}$,
    updated_at = ${now}$
WHERE id = ${id}$ AND tenant_id = ${tenant_id}$

-- name: task_for_tick
-- after a unique key refused a tick's task (a run_now at that very millisecond): is it there?
SELECT id FROM pipeline_tasks
WHERE tenant_id = ${tenant_id}$ AND schedule_id = ${schedule_id}$ AND scheduled_for = ${scheduled_for}$

-- name: set_schedule_status
UPDATE pipeline_schedules SET status = ${status}$, next_fire_at = ${next_fire_at}$, queued_tick = NULL,
    updated_at = ${now}$
WHERE tenant_id = ${tenant_id}$ AND id = ${schedule_id}$

-- name: delete_schedule
-- its tasks stay (they keep its id: the task list still tells where they came from)
DELETE FROM pipeline_schedules WHERE tenant_id = ${tenant_id}$ AND id = ${schedule_id}$
