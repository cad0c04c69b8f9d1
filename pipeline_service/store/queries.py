"""Every SQL statement of the package, by name.

Parameters are sqlor's bound ``${name}$`` form only (never ``$[name]$`` text
substitution).  ``$<name>$ ... $</name>$`` is sqlor's optional block: it is kept
only when parameter ``name`` is not None.  A statement that differs by dialect
is a dict ``{"mysql": ..., "sqlite": ...}``.  Every statement on an owned table
is scoped by ``tenant_id`` except the executor's claim and recovery statements,
which work across tenants by design and touch rows by primary key afterwards.
"""

TASK_COLUMNS = ("id, tenant_id, pipeline_id, owner_id, title, status, error, "
                "created_at, updated_at, started_at, finished_at")
STEP_COLUMNS = ("id, tenant_id, task_id, step_name, step_type, depends_on, config, seq, status, "
                "attempt, attempt_base, crash_count, input_version, input_stale, output_version, error, ready_at, owner, "
                "lease_expires_at, started_at, finished_at, updated_at")
# progress counters of a task, computed from its step rows (never stored, never drift)
PROGRESS = """
  (SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id) AS n_total,
  (SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
     AND s.status = 'succeeded') AS n_succeeded,
  (SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
     AND s.status = 'running') AS n_running,
  (SELECT count(*) FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id
     AND s.status = 'failed') AS n_failed"""
# The per-task serialisation point of every state change is the task's row: whoever
# changes the steps of tasks first locks their task rows (`lock_tasks`), by primary key
# in id order, so two transactions never wait for each other's tasks in a cycle; then
# it reads the step rows it needs (READ COMMITTED: the latest commits).  Step rows
# change only under that lock, except a claim (pending -> running), which locks its
# rows with SKIP LOCKED and so never waits.  SQLite serialises whole transactions.
STEP_STATES = """SELECT s.id, s.tenant_id, s.task_id, s.step_name, s.status, s.ready_at, s.attempt,
    s.attempt_base, s.owner,
    s.crash_count, s.input_version, s.input_stale, s.output_version, s.error,
    (SELECT t.status FROM pipeline_tasks t WHERE t.tenant_id = s.tenant_id AND t.id = s.task_id) AS task_status
    FROM pipeline_task_steps s"""
# whether each task can still make progress, and how it ended if not: each EXISTS is
# one lookup in the `task_status` index (tenant_id, task_id, status, ready_at)
STEP_EXISTS = "EXISTS (SELECT 1 FROM pipeline_task_steps s WHERE s.tenant_id = t.tenant_id AND s.task_id = t.id AND "
LIST_FILTER = """
  WHERE t.tenant_id = ${tenant_id}$
  $<pipeline_id>$ AND t.pipeline_id = ${pipeline_id}$ $</pipeline_id>$
  $<status>$ AND t.status = ${status}$ $</status>$"""

STATEMENTS = {
    # --- pipeline definitions (tables owned by pipeline_core) ---
    # no row: no such pipeline; one row with step_name NULL: a pipeline without steps
    "get_pipeline_definition": """SELECT p.id AS pipeline, p.name, p.description, s.step_name, s.step_type,
        s.depends_on, s.config, s.seq
        FROM pipelines p LEFT JOIN pipeline_steps s ON s.pipeline_id = p.id
        WHERE p.id = ${pipeline_id}$ ORDER BY s.seq, s.step_name""",
    "insert_pipeline": """INSERT INTO pipelines (id, name, description)
        VALUES (${id}$, ${name}$, ${description}$)""",
    "delete_pipeline_steps": "DELETE FROM pipeline_steps WHERE pipeline_id = ${pipeline_id}$",
    "delete_pipeline": "DELETE FROM pipelines WHERE id = ${pipeline_id}$",
    "insert_pipeline_step": """INSERT INTO pipeline_steps (id, pipeline_id, step_name, step_type, depends_on, config, seq)
        VALUES (${id}$, ${pipeline_id}$, ${step_name}$, ${step_type}$, ${depends_on}$, ${config}$, ${seq}$)""",

    # --- tasks ---
    "insert_task": """INSERT INTO pipeline_tasks (id, tenant_id, pipeline_id, owner_id, title, params, status,
        error, created_at, updated_at, started_at, finished_at)
        VALUES (${id}$, ${tenant_id}$, ${pipeline_id}$, ${owner_id}$, ${title}$, ${params}$, ${status}$,
        NULL, ${now}$, ${now}$, NULL, NULL)""",
    "get_task": f"""SELECT {TASK_COLUMNS}, params, {PROGRESS} FROM pipeline_tasks t
        WHERE t.tenant_id = ${{tenant_id}}$ AND t.id = ${{task_id}}$""",
    "count_tasks": f"SELECT count(*) AS n FROM pipeline_tasks t {LIST_FILTER}",
    "list_tasks": f"""SELECT {TASK_COLUMNS}, {PROGRESS} FROM pipeline_tasks t {LIST_FILTER}
        ORDER BY t.created_at DESC, t.id DESC LIMIT ${{limit}}$ OFFSET ${{offset}}$""",
    "task_state": """SELECT id, status, params FROM pipeline_tasks
        WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$""",
    # the first claim of a root step marks its task started (a task paused before it
    # started is already `running` again when resumed, hence the CASE)
    # (by primary key, in id order: see lock_tasks)
    "mark_tasks_started": {
        "mysql": """UPDATE pipeline_tasks FORCE INDEX (PRIMARY) SET status = CASE WHEN status = 'pending'
            THEN 'running' ELSE status END, started_at = ${now}$, updated_at = ${now}$
            WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) AND started_at IS NULL ORDER BY id""",
        "sqlite": """UPDATE pipeline_tasks SET status = CASE WHEN status = 'pending' THEN 'running'
            ELSE status END, started_at = ${now}$, updated_at = ${now}$
            WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) AND started_at IS NULL""",
    },
    # task ids are unique: the two IN lists select exactly the tasks asked for
    "lock_tasks": {
        "mysql": """SELECT id FROM pipeline_tasks FORCE INDEX (PRIMARY)
            WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$) ORDER BY id FOR UPDATE""",
        "sqlite": "SELECT id FROM pipeline_tasks WHERE id IN (${task_ids}$) AND tenant_id IN (${tenant_ids}$)",
    },
    "task_progress": f"""SELECT t.tenant_id, t.id AS task_id,
        {STEP_EXISTS} s.status = 'running') AS has_running,
        {STEP_EXISTS} s.status = 'pending' AND s.ready_at IS NOT NULL) AS has_ready,
        {STEP_EXISTS} s.status = 'failed') AS has_failed,
        {STEP_EXISTS} s.status IN ('pending', 'running', 'failed', 'cancelled', 'skipped')) AS has_unsucceeded
        FROM pipeline_tasks t WHERE t.id IN (${{task_ids}}$) AND t.tenant_id IN (${{tenant_ids}}$)""",
    "set_task_status": """UPDATE pipeline_tasks SET status = ${status}$, error = ${error}$,
        finished_at = ${finished_at}$, updated_at = ${now}$
        WHERE tenant_id = ${tenant_id}$ AND id = ${task_id}$ AND status = ${from_status}$""",

    # --- steps of a task ---
    "insert_step": f"""INSERT INTO pipeline_task_steps ({STEP_COLUMNS}) VALUES (${{id}}$, ${{tenant_id}}$,
        ${{task_id}}$, ${{step_name}}$, ${{step_type}}$, ${{depends_on}}$, ${{config}}$, ${{seq}}$, 'pending',
        0, 0, 0, ${{input_version}}$, 0, NULL, NULL, ${{ready_at}}$, NULL, NULL, NULL, NULL, ${{now}}$)""",
    "get_steps": f"""SELECT {STEP_COLUMNS}, error_trace FROM pipeline_task_steps
        WHERE tenant_id = ${{tenant_id}}$ AND task_id = ${{task_id}}$""",
    "get_step": f"""SELECT {STEP_COLUMNS}, error_trace FROM pipeline_task_steps
        WHERE tenant_id = ${{tenant_id}}$ AND task_id = ${{task_id}}$ AND step_name = ${{step_name}}$""",
    # the states a state change needs, read under its task locks (see STEP_STATES):
    # some steps by id (a finish: linear in what it touches, not in the task's size) ...
    "step_states": f"{STEP_STATES} WHERE s.id IN (${{ids}}$) AND s.tenant_id IN (${{tenant_ids}}$)",
    # ... or all steps of one task (human control; not a locking read: see human control below)
    "task_step_states": f"{STEP_STATES} WHERE s.tenant_id = ${{tenant_id}}$ AND s.task_id = ${{task_id}}$",
    "failed_steps": """SELECT step_name, error FROM pipeline_task_steps
        WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND status = 'failed'""",
    # --- the executor's cross-tenant statements ---
    # one look per poll: is a step of the types this process can run ready now (`runnable`),
    # or when is the next one due (a retry delay); has a lease expired?  Only the step types
    # of this process count: ready steps nobody here can run must not start a claim each poll
    # (the pending entries of `ready` (status, tenant_id, ready_at), a row read only for a
    # step due, EXISTS stops at the first match; `lease`.  MariaDB would rather scan the
    # table when the pending steps are a third of it, so the index is named there.)
    "probe": {dialect: f"""SELECT
        EXISTS (SELECT 1 FROM pipeline_task_steps {hint} WHERE status = 'pending' AND ready_at <= ${{now}}$
          AND step_type IN (${{step_types}}$)) AS runnable,
        (SELECT MIN(ready_at) FROM pipeline_task_steps {hint} WHERE status = 'pending' AND ready_at > ${{now}}$
          AND step_type IN (${{step_types}}$)) AS next_ready,
        (SELECT MIN(lease_expires_at) FROM pipeline_task_steps WHERE status = 'running') AS next_expiry"""
        for dialect, hint in (("mysql", "FORCE INDEX (pipeline_task_steps_ready)"), ("sqlite", ""))},
    # a page of the tenants with ready steps, in tenant id order from the one after ${after}$:
    # a process serves every tenant in turn however many there are (fair dispatch); it reads
    # the `ready` (status, tenant_id, ready_at) entries of the page's tenants only
    "tenants_with_ready_steps": """SELECT tenant_id, MIN(ready_at) AS oldest FROM pipeline_task_steps
        WHERE status = 'pending' AND tenant_id > ${after}$ AND ready_at <= ${now}$
        GROUP BY tenant_id ORDER BY tenant_id LIMIT ${limit}$""",
    # the ready-step claim of one tenant: single-table (TiDB breaks SKIP LOCKED with
    # joins), served by its own index, `ready` (status, tenant_id, ready_at); a claim
    # sends one per tenant it asks, all in one statement (UNION ALL: Transaction.fetch_union)
    "select_ready_steps": {
        "mysql": """SELECT id, tenant_id, task_id, step_name, attempt, attempt_base, input_version, depends_on
            FROM pipeline_task_steps
            WHERE status = 'pending' AND tenant_id = ${tenant_id}$ AND ready_at <= ${now}$
            AND step_type IN (${step_types}$)
            ORDER BY ready_at LIMIT ${limit}$ FOR UPDATE SKIP LOCKED""",
        "sqlite": """SELECT id, tenant_id, task_id, step_name, attempt, attempt_base, input_version, depends_on
            FROM pipeline_task_steps
            WHERE status = 'pending' AND tenant_id = ${tenant_id}$ AND ready_at <= ${now}$
            AND step_type IN (${step_types}$)
            ORDER BY ready_at LIMIT ${limit}$""",
    },
    # leases: extended by the owner's heartbeat, taken back by anyone once expired
    # only the steps the owner runs now: a row it holds that no run of its own records any
    # more (e.g. its outcome was lost in an outage) keeps its lease running out
    "extend_leases": """UPDATE pipeline_task_steps SET lease_expires_at = ${lease_expires_at}$
        WHERE owner = ${owner}$ AND status = 'running' AND id IN (${ids}$)""",
    "owned_running_steps": """SELECT id, attempt FROM pipeline_task_steps
        WHERE owner = ${owner}$ AND status = 'running' AND id IN (${ids}$)""",
    "expired_steps": """SELECT id, tenant_id, task_id, step_name FROM pipeline_task_steps
        WHERE status = 'running' AND lease_expires_at < ${now}$ ORDER BY lease_expires_at LIMIT ${limit}$""",
    # a crash re-run does not use up the retry budget (attempt_base moves along with attempt)
    "recover_step": """UPDATE pipeline_task_steps SET status = 'pending', ready_at = ${ready_at}$, owner = NULL,
        lease_expires_at = NULL, crash_count = crash_count + 1, attempt_base = attempt_base + 1,
        updated_at = ${now}$
        WHERE id = ${id}$ AND status = 'running' AND lease_expires_at < ${now}$""",
    # a graceful stop hands back a claim it will not finish: ready again at once, neither a
    # failure nor a crash (the retry budget stays: attempt_base moves along with attempt)
    "release_step": """UPDATE pipeline_task_steps SET status = 'pending', ready_at = ${ready_at}$, owner = NULL,
        lease_expires_at = NULL, attempt_base = attempt_base + 1, updated_at = ${now}$
        WHERE id = ${id}$ AND status = 'running' AND attempt = ${attempt}$ AND owner = ${owner}$""",
    "fail_lost_step": """UPDATE pipeline_task_steps SET status = 'failed', error = ${error}$, error_trace = NULL,
        owner = NULL,
        lease_expires_at = NULL, crash_count = crash_count + 1, finished_at = ${now}$, updated_at = ${now}$
        WHERE id = ${id}$ AND status = 'running' AND lease_expires_at < ${now}$""",
    # the rows were just selected FOR UPDATE (SKIP LOCKED): this claims all of them
    "claim_steps": """UPDATE pipeline_task_steps SET status = 'running', attempt = attempt + 1, owner = ${owner}$,
        lease_expires_at = ${lease_expires_at}$, started_at = ${now}$, finished_at = NULL, updated_at = ${now}$
        WHERE id IN (${ids}$) AND status = 'pending'""",
    # fenced by the claim token (attempt) and owner: a late result of a run whose
    # claim was taken away changes nothing (succeed_steps: checked on the locked rows)
    "succeed_steps": """UPDATE pipeline_task_steps SET status = 'succeeded',
        output_version = COALESCE(output_version, 0) + 1, error = NULL, error_trace = NULL, owner = NULL,
        lease_expires_at = NULL,
        finished_at = ${now}$, updated_at = ${now}$
        WHERE id IN (${ids}$) AND status = 'running'""",
    "fail_step": """UPDATE pipeline_task_steps SET status = 'failed', error = ${error}$,
        error_trace = ${error_trace}$, owner = NULL,
        lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
        WHERE id = ${id}$ AND status = 'running' AND attempt = ${attempt}$ AND owner = ${owner}$""",
    "requeue_step": """UPDATE pipeline_task_steps SET status = 'pending', ready_at = ${ready_at}$, error = ${error}$,
        error_trace = ${error_trace}$,
        owner = NULL, lease_expires_at = NULL, updated_at = ${now}$
        WHERE id = ${id}$ AND status = 'running' AND attempt = ${attempt}$ AND owner = ${owner}$""",
    # steps become ready together with the input they will run on, in their task's place
    # in the queue (its submit time): the oldest task's ready steps are claimed first
    "make_steps_ready": """UPDATE pipeline_task_steps SET ready_at = (SELECT t.created_at FROM pipeline_tasks t
        WHERE t.tenant_id = pipeline_task_steps.tenant_id AND t.id = pipeline_task_steps.task_id),
        input_version = ${input_version}$, input_stale = 0, updated_at = ${now}$
        WHERE id IN (${ids}$) AND status = 'pending' AND ready_at IS NULL""",
    "skip_waiting_steps": """UPDATE pipeline_task_steps SET status = 'skipped', updated_at = ${now}$
        WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND status = 'pending'""",
    # --- human control ---
    # Step rows are changed by primary key (ids read under the task lock), never through a
    # locking scan of a secondary index: that would lock index entries a claim under way
    # must update while waiting for the claim's rows (a deadlock).  A row a claim takes
    # meanwhile is waited for, then checked again by the WHERE.
    "hold_ready_steps": """UPDATE pipeline_task_steps SET ready_at = NULL, updated_at = ${now}$
        WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status = 'pending' AND ready_at IS NOT NULL""",
    "cancel_unfinished_steps": """UPDATE pipeline_task_steps SET status = 'cancelled', ready_at = NULL, owner = NULL,
        lease_expires_at = NULL, finished_at = ${now}$, updated_at = ${now}$
        WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$ AND status IN ('pending', 'running', 'skipped')""",
    # a re-run: the retry budget starts again (attempt itself never decreases: it is the claim token)
    "reset_steps": """UPDATE pipeline_task_steps SET status = 'pending', ready_at = NULL, error = NULL,
        error_trace = NULL, owner = NULL,
        lease_expires_at = NULL, attempt_base = attempt, input_stale = ${input_stale}$, finished_at = NULL,
        updated_at = ${now}$
        WHERE id IN (${ids}$) AND tenant_id = ${tenant_id}$""",
    "set_manual_output": """UPDATE pipeline_task_steps SET status = 'succeeded', output_version = ${output_version}$,
        error = NULL, error_trace = NULL, ready_at = NULL, owner = NULL, lease_expires_at = NULL,
        finished_at = ${now}$, updated_at = ${now}$
        WHERE id = ${id}$ AND tenant_id = ${tenant_id}$""",
    "set_manual_input": """UPDATE pipeline_task_steps SET input_version = ${input_version}$, input_stale = 0,
        updated_at = ${now}$
        WHERE id = ${id}$ AND tenant_id = ${tenant_id}$""",

    # --- artifacts (insert and read only: an artifact row is never updated or deleted) ---
    # A step row's input_version / output_version is always the newest version of
    # its kind, so the next version is that + 1; the unique index rejects a clash.
    "insert_artifact": """INSERT INTO pipeline_artifacts (id, tenant_id, task_id, step_name, kind, version,
        content, source, lineage, created_at) VALUES (${id}$, ${tenant_id}$, ${task_id}$, ${step_name}$,
        ${kind}$, ${version}$, ${content}$, ${source}$, ${lineage}$, ${now}$)""",
    "get_artifact": """SELECT kind, version, content, source, lineage, created_at FROM pipeline_artifacts
        WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$
        AND kind = ${kind}$ AND version = ${version}$""",
    "list_artifact_versions": """SELECT kind, version, source, lineage, created_at FROM pipeline_artifacts
        WHERE tenant_id = ${tenant_id}$ AND task_id = ${task_id}$ AND step_name = ${step_name}$
        ORDER BY kind, version""",

    # --- the host's code labels (appbase's appcodes tables), written by appcodes.load_codes ---
    "delete_appcodes_kv": "DELETE FROM appcodes_kv WHERE parentid IN (${ids}$)",
    "delete_appcodes": "DELETE FROM appcodes WHERE id IN (${ids}$)",
    "insert_appcode": "INSERT INTO appcodes (id, name, hierarchy_flg) VALUES (${id}$, ${name}$, ${hierarchy_flg}$)",
    "insert_appcode_kv": "INSERT INTO appcodes_kv (id, parentid, k, v) VALUES (${id}$, ${parentid}$, ${k}$, ${v}$)",
}


def statement(name, dialect):
    try:
        sql = STATEMENTS[name]
    except KeyError:
        raise KeyError(f"no SQL statement named {name!r}") from None
    return sql[dialect] if isinstance(sql, dict) else sql
