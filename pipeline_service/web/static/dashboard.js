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

const state = { token: null, labels: { text: {}, task_status: {}, step_status: {}, artifact_source: {} },
                route: null, status: "", pipeline: "", page: 1, timer: null, generation: 0,
                editor: { key: null, dirty: false } };

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

// ---- routing: #/  #/task/<id>  #/task/<id>/node/<step> ----------------------------------
function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "task" && parts[1]) return { view: "task", taskId: parts[1], step: parts[3] || null };
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
  view.replaceChildren();
  view.append(el("div", { id: "problem", class: "empty", hidden: true }));
  if (route.view === "list") {
    const filter = el("select", { id: "status-filter" }, el("option", { value: "" }, t("全部状态")),
      Object.keys(state.labels.task_status).map((s) => el("option", { value: s }, statusLabel("task_status", s))));
    filter.value = state.status;
    filter.addEventListener("change", () => { state.status = filter.value; state.page = 1; refresh(); });
    const pipeline = el("input", { id: "pipeline-filter", type: "search", size: 18, value: state.pipeline });
    pipeline.addEventListener("change", () => { state.pipeline = pipeline.value.trim(); state.page = 1; refresh(); });
    view.append(
      el("div", { class: "toolbar" }, el("h2", {}, t("任务列表")), el("label", {}, `${t("状态")} `, filter),
         el("label", {}, `${t("流水线")} `, pipeline)),
      el("div", { id: "list-body" }),
      el("div", { class: "toolbar", id: "pager" }));
  } else {
    view.append(
      el("p", {}, el("a", { href: "#/" }, `← ${t("返回任务列表")}`)),
      el("div", { id: "task-head" }),
      el("div", { class: "panes" },
        el("div", { class: "dag-box" }, el("div", { id: "dag" }), el("div", { id: "step-errors", class: "errors" })),
        el("div", { id: "node-pane", class: "node-pane", hidden: true })));
    state.editor = { key: null, dirty: false };
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
  const pages = Math.max(1, Math.ceil(data.total / PAGE_ROWS));
  const prev = el("button", { id: "prev-page", onclick: () => { state.page -= 1; refresh(); } }, t("上一页"));
  const next = el("button", { id: "next-page", onclick: () => { state.page += 1; refresh(); } }, t("下一页"));
  prev.disabled = state.page <= 1;
  next.disabled = state.page >= pages;
  document.getElementById("pager").replaceChildren(prev,
    el("span", { id: "page-of" }, `${t("页")} ${state.page} / ${pages} · ${t("共")} ${data.total}`), next);
}

// ---- a task: its head, its DAG, the chosen step ------------------------------------------
async function refreshTask(route, generation) {
  const task = await call("detail", { task_id: route.taskId });
  const node = route.step ? await call("node", { task_id: route.taskId, step_name: route.step }) : null;
  if (generation !== state.generation) return;
  document.getElementById("problem").hidden = true;
  renderHead(task);
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

function renderNode(task, node) {
  const pane = document.getElementById("node-pane");
  if (!node) { pane.hidden = true; pane.replaceChildren(); state.editor = { key: null, dirty: false }; return; }
  pane.hidden = false;
  const step = node.step, key = `${task.id}/${step.step_name}`;
  const shown = JSON.stringify(node.output ?? {}, null, 2);
  // the editor is built once per step and never re-rendered by the polling (typing keeps its focus);
  // its text follows the newest output until the person edits it
  let info = document.getElementById("node-info"), edit = document.getElementById("node-edit");
  if (state.editor.key !== key || !info || !edit) {
    const editor = el("textarea", { id: "output-editor", spellcheck: "false" });
    editor.value = shown;
    editor.addEventListener("input", () => { state.editor.dirty = true; });
    const save = el("button", { id: "save-output", onclick: () => saveOutput(task.id, step.step_name, editor) },
                    t("保存为新版本并重跑下游"));
    info = el("div", { id: "node-info" });
    edit = el("div", { id: "node-edit" }, el("h4", {}, t("编辑输出")), editor, el("p", {}, save));
    pane.replaceChildren(info, edit);
    state.editor = { key, dirty: false };
  } else if (!state.editor.dirty) {
    document.getElementById("output-editor").value = shown;
  }
  const retry = el("button", { id: "retry-step", onclick: () => act(t("确定要从此步重跑吗？此步及其下游将重新执行。"),
    "modify", { task_id: task.id, updates: "{}", rerun_from: step.step_name }, t("已重跑")) }, t("从此步重跑"));
  const versions = el("table", { id: "versions" },
    el("thead", {}, el("tr", {}, ["类型", "版本", "来源", "创建时间"].map((h) => el("th", {}, t(h))))),
    el("tbody", {}, node.versions.map((v) => el("tr", { class: "version", "data-kind": v.kind, "data-version": v.version,
                                                      "data-source": v.source },
      el("td", {}, t(v.kind === "output" ? "输出" : "输入")), el("td", {}, `v${v.version}`),
      el("td", {}, statusLabel("artifact_source", v.source)), el("td", {}, localTime(v.created_at))))));
  info.replaceChildren(
    el("h3", { id: "node-title", "data-step": step.step_name }, `${t("步骤")} ${step.step_name}`),
    el("p", {}, statusBadge("step_status", step.status), " ",
       el("span", { class: "meta" }, `${t("类型")} ${step.step_type} · ${t("尝试次数")} ${step.attempt}` +
          (step.depends_on.length ? ` · ${t("依赖")} ${step.depends_on.join(", ")}` : "")), " ", retry),
    step.error ? el("pre", { class: "error-text", id: "step-error" }, step.error) : "",
    step.traceback ? el("pre", { class: "error-text" }, step.traceback) : "",
    el("h4", {}, t("版本")), versions,
    el("h4", {}, `${t("输入")} v${node.input_version ?? "-"}`), el("pre", { id: "node-input" }, JSON.stringify(node.input, null, 2)),
    el("h4", {}, `${t("输出")} v${node.version ?? "-"}`), el("pre", { id: "node-output" }, JSON.stringify(node.output, null, 2)));
}

async function saveOutput(taskId, stepName, editor) {
  let output;
  try { output = JSON.parse(editor.value); } catch (e) { output = null; }
  if (!output || typeof output !== "object" || Array.isArray(output)) {
    say(t("输出不是有效的 JSON 对象"), false);
    return;
  }
  const updates = JSON.stringify({ [stepName]: { output } });
  if (await act(t("确定要保存新版本吗？下游步骤将重新执行。"), "modify", { task_id: taskId, updates }, t("已修改"))) {
    state.editor.dirty = false;
  }
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
