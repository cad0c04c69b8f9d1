// The dashboard page: a tenant's tasks, a task's DAG, a step's versions; live by polling.
// Data only through the JSON API (api/<op>, the module's operations); text only through
// textContent (nothing read from the server ever becomes markup).  A status is a CSS class
// built from its string (status-<s>, step-<s>): a new status needs no change here.
"use strict";

const POLL_MS = 1000;
const PAGE_ROWS = 20;
const TOKEN_KEY = "pipeline_service_token";
const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 170, NODE_H = 52, GAP_X = 70, GAP_Y = 22, MARGIN = 16;

const SCHEDULE_ROWS = 100;
const CHOICE_WORDS = { approve: "批准", reject: "驳回" };  // an approval's default choices; others as named

const state = { token: null, labels: { text: {}, task_status: {}, step_status: {}, artifact_source: {}, schedule_status: {} },
                route: null, status: "", pipeline: "", page: 1, timer: null, generation: 0,
                versions: { output: null, input: null },  // the node view's versions (null: the latest)
                shown: { output: null, input: null }, editor: { key: null, dirty: false, kind: "output" } };

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

// ---- words: Chinese first, then English (i18n/en/msg.txt) --------------------------------
function t(zh) {
  const en = state.labels.text[zh];
  return en && en !== zh ? `${zh} ${en}` : zh;
}

function statusLabel(kind, status) {
  const label = (state.labels[kind] || {})[status];
  return label ? `${label.zh} ${label.en}` : status;
}

function cssName(status) {
  return String(status).replace(/[^A-Za-z0-9_-]/g, "_");
}

function localTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
         `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// ---- DOM helpers ---------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function statusBadge(kind, status) {
  return el("span", { class: `status status-${cssName(status)}`, "data-status": status }, statusLabel(kind, status));
}

function say(text, ok) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
}

function quiet() {
  document.getElementById("message").hidden = true;
}

function translateStatic() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.textContent);
  document.title = t("流水线看板");
}

// ---- the API -------------------------------------------------------------------------------
async function call(op, params, post) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const clean = Object.fromEntries(Object.entries(params || {}).filter(([, v]) => v !== "" && v != null));
  let url = `api/${op}`;
  const init = { method: post ? "POST" : "GET", headers };
  if (post) init.body = new URLSearchParams(clean);
  else if (Object.keys(clean).length) url += `?${new URLSearchParams(clean)}`;
  const response = await fetch(url, init);
  let body;
  try { body = await response.json(); } catch (e) { throw new ApiError("error", `${t("请求失败")}: HTTP ${response.status}`); }
  if (body.status !== "ok") throw new ApiError(body.code, body.message);
  return body.data;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const ok = document.getElementById("confirm-ok"), back = document.getElementById("confirm-back");
    const done = (answer) => { ok.onclick = back.onclick = dialog.oncancel = null; dialog.close(); resolve(answer); };
    ok.onclick = () => done(true);
    back.onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

async function act(question, op, params, doneText) {
  if (!(await confirmAction(question))) return false;
  try {
    await call(op, params, true);
    say(doneText, true);
    refresh();
    return true;
  } catch (e) {
    say(`${t("请求失败")}: ${e.message}`, false);
    return false;
  }
}
// ---- routing: #/  #/schedules  #/task/<id>  #/task/<id>/node/<step> ---------------------
function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "task" && parts[1]) return { view: "task", taskId: parts[1], step: parts[3] || null };
  if (parts[0] === "schedules") return { view: "schedules" };
  return { view: "list" };
}

function go(hash) { location.hash = hash; }
function taskHash(taskId, step) {
  return `#/task/${encodeURIComponent(taskId)}` + (step ? `/node/${encodeURIComponent(step)}` : "");
}

function onRoute() {
  quiet();
  const route = parseRoute();
  const same = state.route && state.route.view === route.view && state.route.taskId === route.taskId;
  if (!same || state.route.step !== route.step) state.versions = { output: null, input: null };  // the latest
  state.route = route;
  if (!same) buildView(route);
  refresh();
}

// every refresh is numbered: an answer to an older one (a route left meanwhile) is dropped
async function refresh() {
  clearTimeout(state.timer);
  const generation = ++state.generation;
  const route = state.route;
  try {
    if (route.view === "list") await refreshList(generation);
    else if (route.view === "schedules") await refreshSchedules(generation);
    else await refreshTask(route, generation);
  } catch (e) {
    if (generation === state.generation) showProblem(e);
  }
  if (generation === state.generation) state.timer = setTimeout(refresh, POLL_MS);
}

function showProblem(e) {
  const title = e.code === "not_found" ? t("未找到") : e.code === "not_logged_in" ? t("请先登录") : t("请求失败");
  const box = document.getElementById("problem");
  if (box) { box.textContent = `${title}: ${e.message}`; box.hidden = false; }
  else say(`${title}: ${e.message}`, false);
}

function buildView(route) {
  const view = document.getElementById("view");
  view.replaceChildren(el("div", { id: "problem", class: "empty", hidden: true }));
  if (route.view === "list") buildList(view);
  else if (route.view === "schedules") buildSchedules(view);
  else buildTask(view);
}

function buildList(view) {
  const filter = el("select", { id: "status-filter" }, el("option", { value: "" }, t("全部状态")),
    Object.keys(state.labels.task_status).map((s) => el("option", { value: s }, statusLabel("task_status", s))));
  filter.value = state.status;
  filter.addEventListener("change", () => { state.status = filter.value; state.page = 1; refresh(); });
  const pipeline = el("input", { id: "pipeline-filter", type: "search", size: 18, value: state.pipeline });
  pipeline.addEventListener("change", () => { state.pipeline = pipeline.value.trim(); state.page = 1; refresh(); });
  const form = submitForm();
  const toggle = el("button", { id: "new-task", onclick: () => { form.hidden = !form.hidden; } }, t("提交任务"));
  view.append(
    el("div", { class: "toolbar" }, el("h2", {}, t("任务列表")), el("label", {}, `${t("状态")} `, filter),
       el("label", {}, `${t("流水线")} `, pipeline), toggle),
    form,
    el("div", { id: "list-body" }),
    el("div", { class: "toolbar", id: "pager" }));
}

function buildTask(view) {
  view.append(
    el("p", {}, el("a", { href: "#/" }, `← ${t("返回任务列表")}`)),
    el("div", { id: "task-head" }),
    el("div", { id: "approvals" }),
    el("div", { class: "panes" },
      el("div", { class: "dag-box" }, el("div", { id: "dag" }), el("div", { id: "step-errors", class: "errors" })),
      el("div", { id: "node-pane", class: "node-pane", hidden: true })));
  state.editor = { key: null, dirty: false, kind: "output" };
}

// ---- the submit form: pipeline, title, params; the tenant is never a field (the server takes the viewer's)
function submitForm() {
  const pipeline = el("input", { id: "submit-pipeline", type: "text", size: 28, list: "known-pipelines" });
  const title = el("input", { id: "submit-title", type: "text", size: 40 });
  const params = el("textarea", { id: "submit-params", spellcheck: "false", rows: 6 });
  params.value = "{}";
  const problem = el("div", { id: "submit-error", class: "form-error", role: "alert", hidden: true });
  const send = el("button", { id: "submit-go" }, t("提交"));
  send.addEventListener("click", () => submitTask(pipeline, title, params, problem, send));
  return el("div", { id: "submit-form", class: "card", hidden: true },
    el("h3", {}, t("提交任务")),
    el("p", {}, el("label", {}, `${t("流水线")} `, pipeline), el("datalist", { id: "known-pipelines" }), " ",
       el("label", {}, `${t("标题")} `, title)),
    el("label", {}, `${t("参数")} (JSON)`), params, problem, el("p", {}, send));
}

async function submitTask(pipeline, title, params, problem, send) {
  const show = (text) => { problem.textContent = text; problem.hidden = false; };
  problem.hidden = true;
  const pipelineId = pipeline.value.trim();
  if (!pipelineId) { show(t("请填写流水线")); return; }
  let parsed;
  try { parsed = JSON.parse(params.value.trim() || "{}"); } catch (e) {
    show(`${t("参数不是有效的 JSON 对象")}: ${e.message}`);
    return;
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) { show(t("参数不是有效的 JSON 对象")); return; }
  send.disabled = true;
  try {
    const task = await call("submit", { pipeline_id: pipelineId, title: title.value.trim(),
                                        params: JSON.stringify(parsed) }, true);
    go(taskHash(task.id));
  } catch (e) {
    show(`${t("提交失败")}: ${e.message}`);
  } finally {
    send.disabled = false;
  }
}

// ---- the task list -------------------------------------------------------------------------
async function refreshList(generation) {
  const data = await call("list", { status: state.status, pipeline_id: state.pipeline, page: state.page,
                                    rows: PAGE_ROWS });
  if (generation !== state.generation) return;
  document.getElementById("problem").hidden = true;
  const body = document.getElementById("list-body");
  if (!data.rows.length) {
    body.replaceChildren(el("div", { class: "empty", id: "no-tasks" }, t("没有任务")));
  } else {
    const head = el("tr", {}, ["标题", "流水线", "状态", "进度", "创建时间", "更新时间"].map((h) => el("th", {}, t(h))));
    const rows = data.rows.map((task) => el("tr", {
      class: "task-row", "data-task-id": task.id, "data-status": task.status,
      onclick: () => go(taskHash(task.id)),
    },
      el("td", { class: "title" }, el("a", { href: taskHash(task.id) }, task.title || task.id)),
      el("td", {}, task.pipeline_id),
      el("td", {}, statusBadge("task_status", task.status)),
      el("td", { class: "progress" }, `${task.progress.succeeded}/${task.progress.total}`),
      el("td", {}, localTime(task.created_at)),
      el("td", {}, localTime(task.updated_at))));
    body.replaceChildren(el("table", { id: "task-list" }, el("thead", {}, head), el("tbody", {}, rows)));
  }
  const known = [...new Set(data.rows.map((task) => task.pipeline_id))];  // the form's suggestions
  document.getElementById("known-pipelines").replaceChildren(...known.map((p) => el("option", { value: p })));
  const pages = Math.max(1, Math.ceil(data.total / PAGE_ROWS));
  const prev = el("button", { id: "prev-page", onclick: () => { state.page -= 1; refresh(); } }, t("上一页"));
  const next = el("button", { id: "next-page", onclick: () => { state.page += 1; refresh(); } }, t("下一页"));
  prev.disabled = state.page <= 1;
  next.disabled = state.page >= pages;
  document.getElementById("pager").replaceChildren(prev,
    el("span", { id: "page-of" }, `${t("页")} ${state.page} / ${pages} · ${t("共")} ${data.total}`), next);
}

// ---- the schedules: when each fires, its last task, pause / resume / run now ----------------
function buildSchedules(view) {
  view.append(el("div", { class: "toolbar" }, el("h2", {}, t("定时任务")),
                 el("span", { class: "meta" }, t("最近的 100 个定时"))),
              el("div", { id: "schedule-body" }));
}

function scheduleRule(s) {
  const zone = s.timezone ? ` (${s.timezone})` : "";
  if (s.cron) return `cron ${s.cron}${zone}`;
  if (s.every) return `${t("每隔")} ${s.every} s`;
  return `${t("一次")} ${localTime(s.at)}`;
}

async function refreshSchedules(generation) {
  const data = await call("schedule_list", { rows: SCHEDULE_ROWS });
  if (generation !== state.generation) return;
  document.getElementById("problem").hidden = true;
  const body = document.getElementById("schedule-body");
  if (!data.rows.length) {
    body.replaceChildren(el("div", { class: "empty", id: "no-schedules" }, t("没有定时任务")));
    return;
  }
  const head = el("tr", {}, ["标题", "流水线", "规则", "状态", "下次运行", "最近任务", "操作"].map((h) => el("th", {}, t(h))));
  const rows = data.rows.map((s) => {
    const name = s.title || s.pipeline_id;
    const buttons = [];
    if (s.status === "active") {
      buttons.push(el("button", { class: "schedule-pause", onclick: () => act(
        `${t("确定要暂停此定时吗？")} ${name}`, "schedule_pause", { schedule_id: s.id }, t("定时已暂停")) }, t("暂停")));
    }
    if (s.status === "paused") {
      buttons.push(el("button", { class: "schedule-resume", onclick: () => act(
        `${t("确定要恢复此定时吗？")} ${name}`, "schedule_resume", { schedule_id: s.id }, t("定时已恢复")) }, t("恢复")));
    }
    buttons.push(el("button", { class: "schedule-run-now", onclick: () => act(
      `${t("确定要立即运行一次吗？")} ${name}`, "schedule_run_now", { schedule_id: s.id }, t("已立即运行")) }, t("立即运行")));
    const last = s.runs.length ? s.runs[0] : null;
    return el("tr", { class: "schedule-row", "data-schedule-id": s.id, "data-status": s.status },
      el("td", {}, name), el("td", {}, s.pipeline_id), el("td", {}, scheduleRule(s)),
      el("td", {}, statusBadge("schedule_status", s.status)), el("td", {}, localTime(s.next_fire_at)),
      el("td", { class: "last-run" }, last ? el("a", { href: taskHash(last.task_id) },
                                                statusBadge("task_status", last.status), " ", localTime(last.created_at)) : ""),
      el("td", { class: "actions" }, buttons));
  });
  body.replaceChildren(el("table", { id: "schedule-list" }, el("thead", {}, head), el("tbody", {}, rows)));
}

// ---- a task: its head, its approvals, its DAG, the chosen step ----------------------------
async function refreshTask(route, generation) {
  const task = await call("detail", { task_id: route.taskId });
  const chosen = state.versions;
  const node = route.step ? await call("node", { task_id: route.taskId, step_name: route.step,
                                                 version: chosen.output, input_version: chosen.input }) : null;
  if (generation !== state.generation) return;
  document.getElementById("problem").hidden = true;
  renderHead(task);
  renderApprovals(task);
  renderDag(task, route.step);
  renderNode(task, node);
}

function renderHead(task) {
  const p = task.progress;
  const actions = el("span", { class: "actions" },
    el("button", { id: "pause", onclick: () => act(t("确定要暂停此任务吗？"), "pause", { task_id: task.id }, t("已暂停")) },
       t("暂停")),
    el("button", { id: "resume", onclick: () => act(t("确定要恢复此任务吗？"), "resume", { task_id: task.id }, t("已恢复")) },
       t("恢复")),
    el("button", { id: "cancel", class: "danger",
                   onclick: () => act(t("确定要取消此任务吗？取消后不能恢复。"), "cancel", { task_id: task.id }, t("已取消")) },
       t("取消任务")));
  document.getElementById("task-head").replaceChildren(el("div", { class: "task-head", "data-task-id": task.id },
    el("h2", { id: "task-title" }, task.title || task.id),
    el("span", { id: "task-status" }, statusBadge("task_status", task.status)),
    el("span", { class: "meta", id: "task-progress" }, `${t("进度")} ${p.succeeded}/${p.total}`),
    el("span", { class: "meta" }, `${t("流水线")} ${task.pipeline_id} · ${t("创建时间")} ${localTime(task.created_at)}`),
    actions),
    task.error ? el("pre", { class: "error-text", id: "task-error" }, task.error) : "");
}

// a step waiting for a person's decision (an approval): its prompt, a button per choice
function choiceLabel(choice) {
  return CHOICE_WORDS[choice] ? t(CHOICE_WORDS[choice]) : choice;
}

function renderApprovals(task) {
  const asking = task.steps.filter((s) => s.status === "waiting" && s.waiting_for && s.waiting_for.kind === "signal");
  document.getElementById("approvals").replaceChildren(...asking.map((s) => {
    const choices = (s.waiting_for.choices || []).map((c) => el("button", {
      class: `choice${c === "reject" ? " danger" : ""}`, "data-choice": c,
      onclick: () => act(`${t("确定要提交此决定吗？")} ${s.step_name}: ${choiceLabel(c)}`, "signal",
                         { task_id: task.id, step_name: s.step_name, decision: c }, t("已送达")),
    }, choiceLabel(c)));
    return el("div", { class: "approval", "data-step": s.step_name },
      el("strong", {}, `${t("待审批")} · ${t("步骤")} ${s.step_name}`),
      el("p", { class: "prompt" }, s.waiting_for.prompt || t("此步骤等待一个信号")),
      el("div", { class: "choices" }, choices));
  }));
}

// columns by depth (a step's column: one past its deepest dependency), rows in the given order
function layout(steps) {
  const depth = {}, columns = [];
  for (const s of steps) {  // the detail lists steps in topological order
    depth[s.step_name] = s.depends_on.length ? 1 + Math.max(...s.depends_on.map((d) => depth[d] ?? 0)) : 0;
    (columns[depth[s.step_name]] ||= []).push(s.step_name);
  }
  const tallest = Math.max(...columns.map((c) => c.length));
  const place = {};
  columns.forEach((names, col) => {
    const offset = ((tallest - names.length) * (NODE_H + GAP_Y)) / 2;
    names.forEach((name, row) => {
      place[name] = { x: MARGIN + col * (NODE_W + GAP_X), y: MARGIN + offset + row * (NODE_H + GAP_Y) };
    });
  });
  return { place, width: 2 * MARGIN + columns.length * NODE_W + (columns.length - 1) * GAP_X,
           height: 2 * MARGIN + tallest * NODE_H + (tallest - 1) * GAP_Y };
}

function renderDag(task, chosen) {
  const { place, width, height } = layout(task.steps);
  const picture = svg("svg", { class: "dag", id: "dag-svg", width, height, viewBox: `0 0 ${width} ${height}`,
                               role: "img", "aria-label": task.title || task.id });
  picture.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
  for (const s of task.steps) {
    for (const dep of s.depends_on) {
      const a = place[dep], b = place[s.step_name];
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2, mid = (x1 + x2) / 2;
      picture.append(svg("path", { class: "edge", "data-from": dep, "data-to": s.step_name, "marker-end": "url(#arrow)",
                                   d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}` }));
    }
  }
  for (const s of task.steps) {
    const { x, y } = place[s.step_name];
    const selected = s.step_name === chosen ? " selected" : "";
    const g = svg("g", { class: `node step-${cssName(s.status)}${selected}`, "data-step": s.step_name,
                         "data-status": s.status, tabindex: 0, transform: `translate(${x} ${y})` },
      svg("title", {}, s.error ? `${s.step_name}: ${s.error}` : s.step_name),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
      svg("text", { x: 10, y: 20 }, s.step_name.length > 20 ? `${s.step_name.slice(0, 19)}…` : s.step_name),
      svg("text", { x: 10, y: 40, class: "sub" },
          `${statusLabel("step_status", s.status).split(/[：: ]/)[0]} · v${s.output_version ?? "-"}`));
    g.addEventListener("click", () => go(taskHash(task.id, s.step_name)));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") go(taskHash(task.id, s.step_name)); });
    picture.append(g);
  }
  document.getElementById("dag").replaceChildren(picture);
  const failed = task.steps.filter((s) => s.error);
  document.getElementById("step-errors").replaceChildren(failed.length ? el("div", {},
    el("strong", {}, t("失败的步骤")),
    el("ul", {}, failed.map((s) => el("li", { "data-step": s.step_name }, `${s.step_name}: ${s.error}`)))) : "");
}

// ---- the node view: every version of the step's input and output, with its lineage ---------
function lineageText(v) {
  const lineage = v && v.lineage;
  if (!lineage) return "";
  if (v.kind === "output") return `${t("输入")} v${lineage.input_version ?? "-"}`;
  const upstream = Object.entries(lineage).map(([dep, n]) => `${dep} v${n}`);
  return upstream.length ? upstream.join(", ") : t("无上游");
}

function chooseVersion(v) {
  // an output brings the input that made it; an input is shown beside the output already chosen
  state.versions = v.kind === "output" ? { output: v.version, input: null }
                                       : { output: state.versions.output, input: v.version };
  state.editor.dirty = false;
  refresh();
}

function buildEditor(taskId, stepName) {
  const kind = el("select", { id: "editor-kind" },
    el("option", { value: "output" }, t("输出")), el("option", { value: "input" }, t("输入")));
  const editor = el("textarea", { id: "node-editor", spellcheck: "false" });
  editor.addEventListener("input", () => { state.editor.dirty = true; });
  kind.addEventListener("change", () => {
    state.editor.kind = kind.value;
    state.editor.dirty = false;
    editor.value = JSON.stringify(state.shown[kind.value] ?? {}, null, 2);
  });
  const save = el("button", { id: "save-version", onclick: () => saveVersion(taskId, stepName, kind.value, editor) },
                  t("保存为新版本并重跑"));
  return el("div", { id: "node-edit" }, el("h4", {}, t("编辑为新版本")),
            el("p", {}, el("label", {}, `${t("类型")} `, kind)), editor, el("p", {}, save));
}

function renderNode(task, node) {
  const pane = document.getElementById("node-pane");
  if (!node) { pane.hidden = true; pane.replaceChildren(); state.editor = { key: null, dirty: false, kind: "output" }; return; }
  pane.hidden = false;
  const step = node.step, key = `${task.id}/${step.step_name}`;
  state.shown = { output: node.output, input: node.input };
  // the editor is built once per step and never re-rendered by the polling (typing keeps its focus);
  // its text follows the version shown until the person edits it
  let info = document.getElementById("node-info");
  if (state.editor.key !== key || !info || !document.getElementById("node-edit")) {
    info = el("div", { id: "node-info" });
    pane.replaceChildren(info, buildEditor(task.id, step.step_name));
    state.editor = { key, dirty: false, kind: "output" };
  }
  if (!state.editor.dirty) {
    document.getElementById("node-editor").value = JSON.stringify(state.shown[state.editor.kind] ?? {}, null, 2);
  }
  const retry = el("button", { id: "retry-step", onclick: () => act(t("确定要从此步重跑吗？此步及其下游将重新执行。"),
    "modify", { task_id: task.id, updates: "{}", rerun_from: step.step_name }, t("已重跑")) }, t("从此步重跑"));
  const shownOf = { output: node.version, input: node.input_version };
  const versions = el("table", { id: "versions" },
    el("thead", {}, el("tr", {}, ["类型", "版本", "来源", "血缘", "创建时间"].map((h) => el("th", {}, t(h))))),
    el("tbody", {}, node.versions.map((v) => el("tr", {
      class: `version${shownOf[v.kind] === v.version ? " chosen" : ""}`, "data-kind": v.kind, "data-version": v.version,
      "data-source": v.source, title: t("查看此版本"), onclick: () => chooseVersion(v),
    },
      el("td", {}, t(v.kind === "output" ? "输出" : "输入")), el("td", {}, `v${v.version}`),
      el("td", {}, statusLabel("artifact_source", v.source)), el("td", { class: "lineage" }, lineageText(v)),
      el("td", {}, localTime(v.created_at))))));
  const input = node.versions.find((v) => v.kind === "input" && v.version === node.input_version);
  const config = node.input && typeof node.input === "object" && "config" in node.input;
  info.replaceChildren(
    el("h3", { id: "node-title", "data-step": step.step_name }, `${t("步骤")} ${step.step_name}`),
    el("p", {}, statusBadge("step_status", step.status), " ",
       el("span", { class: "meta" }, `${t("类型")} ${step.step_type} · ${t("尝试次数")} ${step.attempt}` +
          (step.depends_on.length ? ` · ${t("依赖")} ${step.depends_on.join(", ")}` : "")), " ", retry),
    step.error ? el("pre", { class: "error-text", id: "step-error" }, step.error) : "",
    step.traceback ? el("pre", { class: "error-text" }, step.traceback) : "",
    el("h4", {}, `${t("版本")} · ${t("点击一行查看该版本")}`), versions,
    el("h4", { id: "output-heading" }, `${t("输出")} v${node.version ?? "-"}`),
    el("pre", { id: "node-output" }, JSON.stringify(node.output, null, 2)),
    el("h4", { id: "input-heading" }, `${t("输入")} v${node.input_version ?? "-"}`),
    el("p", { class: "meta", id: "node-input-lineage" }, input ? `${t("来自")} ${lineageText(input)}` : ""),
    el("pre", { id: "node-input" }, JSON.stringify(node.input, null, 2)),
    ...(config ? [el("h4", {}, t("渲染后的配置")),
                  el("pre", { id: "node-config" }, JSON.stringify(node.input.config, null, 2))] : []));
}

async function saveVersion(taskId, stepName, kind, editor) {
  let value;
  try { value = JSON.parse(editor.value); } catch (e) { value = null; }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    say(t(kind === "output" ? "输出不是有效的 JSON 对象" : "输入不是有效的 JSON 对象"), false);
    return;
  }
  const question = kind === "output" ? t("确定要保存新版本吗？下游步骤将重新执行。")
                                     : t("确定要保存新输入吗？此步及其下游将重新执行。");
  const updates = JSON.stringify({ [stepName]: { [kind]: value } });
  const chosen = state.versions;
  state.versions = { output: null, input: null };  // then show the newest versions: the one made now
  if (await act(question, "modify", { task_id: taskId, updates }, t("已修改"))) state.editor.dirty = false;
  else state.versions = chosen;
}

// ---- start ---------------------------------------------------------------------------------
async function start() {
  const found = location.hash.match(/^#token=([^&]+)/);
  if (found) {  // keep the token for this tab only, and out of the address bar
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
    history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  try {
    state.labels = await call("labels");
  } catch (e) { /* the page still works with the statuses' own names */ }
  translateStatic();
  try {
    const me = await call("whoami");
    document.getElementById("who").textContent = `${t("租户")} ${me.tenant_id} · ${t("用户")} ${me.user_id}`;
  } catch (e) {
    say(`${t("请先登录")}: ${e.message}`, false);
    return;
  }
  window.addEventListener("hashchange", onRoute);
  onRoute();
}

document.addEventListener("DOMContentLoaded", start);
