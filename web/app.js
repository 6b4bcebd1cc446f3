// The web client: screens (log in, register, reset, chat), the gate's account routes over
// fetch and one chat session over WebSocket (chat.js). Every field is checked as the
// desktop client does (checks.js) before anything is sent; every error is shown as a
// sentence (sentences.js). document.body.dataset.state says where the client is
// ("login", "online", "reconnecting", "kicked"): styles and the browser tests read it.
import * as checks from "./checks.js";
import * as say from "./sentences.js";
import { xor } from "./password.js";
import { ChatConn } from "./chat.js";

const $ = (id) => document.getElementById(id);
const GROUP_NAME_EMPTY = "Group name is empty";

// The client's timings: config section `client`, which the gate hands out as
// /web/settings.json; these are the defaults of its schema, used when that fails.
const settings = { heartbeat_ms: 10000, retry_min_ms: 200, retry_max_ms: 5000, reconnect_attempts: 10,
  request_timeout_ms: 10000 };

const state = {
  me: null,            // the 1006 reply
  creds: null,         // {email, passwd (obfuscated)} while logged in: a lost connection logs in again
  conn: null,
  heartbeat: null,
  friends: new Map(),  // uid -> {uid, name, nick, back}
  requests: new Map(), // applicant uid -> {uid, name, nick, desc}
  threads: new Map(),  // friend uid -> {thread_id, unread}
  groups: new Map(),   // group thread_id -> {thread_id, name, unread}
  messages: new Map(), // thread_id -> Map(message_id -> {id, sender, content, time})
  open: null,          // the friend uid whose chat is shown
  openGroup: null,     // or the group thread_id whose chat is shown
  generation: 0,       // bumped at each log-out, so a late reconnect gives up
};

function setState(s) { document.body.dataset.state = s; }

function showScreen(name) {
  for (const s of ["login", "register", "reset", "main"]) $(`screen-${s}`).hidden = s !== name;
}

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// ---- the gate ------------------------------------------------------------------------

async function gate(path, body) {
  let res;
  try {
    res = await fetch(path, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body) });
  } catch (e) {
    throw new Error(say.network("gate", e.message));
  }
  let json = null;
  try { json = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(say.http(res.status, json));
  if (!json || typeof json.error !== "number") throw new Error(say.BAD_REPLY);
  return json;
}

async function gateOk(path, body) {
  const r = await gate(path, body);
  if (r.error !== 0) throw new Error(say.of(r.error, r));
  return r;
}

// Runs fn with the form's button disabled; its error (or checks' message) lands in errEl.
async function busy(button, errEl, fn) {
  errEl.textContent = "";
  button.disabled = true;
  try { await fn(); } catch (e) { errEl.textContent = e.message; } finally { button.disabled = false; }
}

function checked(failure) {
  if (failure) {
    const input = document.querySelector(`form:not([hidden]) [id$="-${failure.field}"]`);
    input?.focus();
    throw new Error(failure.message);
  }
}

// ---- the chat session ----------------------------------------------------------------

// Logs in through the gate and the chat server -> {conn, me}; throws a sentence.
async function openSession(creds) {
  const r = await gateOk("/user_login", { email: creds.email, passwd: creds.passwd });
  if (!r.wsurl) throw new Error(say.NO_WS);
  const conn = new ChatConn(r.wsurl, { timeoutMs: settings.request_timeout_ms,
    onPush: (id, body) => { if (conn === state.conn) onPush(id, body); },
    onClose: () => { if (conn === state.conn) lost(); },
  });
  try { await conn.open(); } catch (e) { throw new Error(say.network("chat server", e.message)); }
  let me;
  try { me = await conn.request(1005, { uid: r.uid, token: r.token }); } catch (e) {
    conn.close();
    throw new Error(say.network("chat server", e.message));
  }
  if (me.error !== 0) { conn.close(); throw new Error(say.of(me.error, me)); }
  return { conn, me };
}

function install({ conn, me }) {
  state.conn = conn;
  state.me = me;
  state.friends.clear();
  for (const f of me.friend_list || []) state.friends.set(f.uid, f);
  state.requests.clear();
  for (const a of me.apply_list || []) if (a.status === 0 && !state.friends.has(a.uid)) state.requests.set(a.uid, a);
  $("me-name").textContent = me.nick || me.name;
  document.body.dataset.uid = me.uid;
  clearInterval(state.heartbeat);
  state.heartbeat = setInterval(() => {
    conn.request(1023, { fromuid: me.uid }).catch(() => { if (conn === state.conn) conn.close(), lost(); });
  }, settings.heartbeat_ms);
  setState("online");
  showScreen("main");
  render();
  loadThreads().then(() => {
    if (state.open) openChat(state.open);
    else if (state.openGroup) openGroup(state.openGroup);
  }).catch(showChatError);
}

function endSession() {
  clearInterval(state.heartbeat);
  const conn = state.conn;
  state.conn = null;
  conn?.close();
}

function logout(sentence) {
  state.generation++;
  endSession();
  state.me = state.creds = state.open = state.openGroup = null;
  state.groups.clear();
  delete document.body.dataset.uid;
  setState("login");
  state.messages.clear();
  state.threads.clear();
  banner("");
  $("login-error").textContent = sentence || "";
  $("login-info").textContent = "";
  showScreen("login");
  location.hash = "#login";
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The connection was lost (not kicked, not logged out): log in again with backoff.
async function lost() {
  if (!state.creds || document.body.dataset.state === "reconnecting") return;
  endSession();
  setState("reconnecting");
  banner(say.LOST);
  const gen = state.generation;
  let delay = settings.retry_min_ms;
  for (let i = 0; i < settings.reconnect_attempts; i++) {
    await sleep(delay * (0.5 + Math.random() / 2));
    delay = Math.min(delay * 2, settings.retry_max_ms);
    if (gen !== state.generation) return;
    try {
      const session = await openSession(state.creds);
      if (gen !== state.generation) { session.conn.close(); return; }
      banner("");
      install(session);
      return;
    } catch (e) {
      // a wrong password now (changed elsewhere) will not get better by waiting
      if (e.message === say.of(1009)) { logout(e.message); return; }
    }
  }
  if (gen === state.generation) logout(say.GAVE_UP);
}

async function loadThreads() {
  for (let cursor = 0; ;) {
    const r = await request(1025, { uid: state.me.uid, thread_id: cursor });
    for (const t of r.threads || []) {
      if (t.type === "group") {
        state.groups.set(t.thread_id, { thread_id: t.thread_id, name: t.name, unread: t.unread || 0 });
        continue;
      }
      if (t.type !== "private") continue;
      const other = t.user1_id === state.me.uid ? t.user2_id : t.user1_id;
      state.threads.set(other, { thread_id: t.thread_id, unread: t.unread || 0 });
    }
    if (!r.load_more || !(r.next_last_id > cursor)) break; // each page moves the cursor on
    cursor = r.next_last_id;
  }
  render();
}

function thread(id) {
  if (!state.messages.has(id)) state.messages.set(id, new Map());
  return state.messages.get(id);
}

function addMessages(threadId, items) {
  const t = thread(threadId);
  for (const m of items) t.set(m.id, m);
}

// 1018/1019/1014/1015 items and 1030 items in one shape
const fromPush = (body, sender) => (body.chat_datas || []).map((d) => ({
  id: d.message_id ?? d.msg_id, sender: d.sender ?? sender, content: d.content ?? d.msg_content,
  time: d.chat_time, image: d.msg_type === 1,
}));

function onPush(id, body) {
  switch (id) {
    case 1021: // kicked: another login of this account took over
      state.generation++;
      endSession();
      state.creds = null;
      logout(say.KICKED);
      setState("kicked");
      break;
    case 1011: // someone asks to be our friend
      if (!state.friends.has(body.applyuid)) {
        state.requests.set(body.applyuid, { uid: body.applyuid, name: body.name, nick: body.nick, desc: body.desc });
        render();
      }
      break;
    case 1015: // our request was accepted
      befriend({ uid: body.fromuid, name: body.name, nick: body.nick }, body.thread_id, fromPush(body));
      break;
    case 1019: { // a text from a friend
      const other = body.fromuid === state.me.uid ? body.touid : body.fromuid;
      const items = fromPush(body, body.fromuid);
      if (!state.threads.has(other)) state.threads.set(other, { thread_id: body.thread_id, unread: 0 });
      const t = thread(body.thread_id);
      const fresh = items.filter((m) => !t.has(m.id));
      addMessages(body.thread_id, items);
      if (state.open === other) markRead(other);
      else state.threads.get(other).unread += fresh.length;
      render();
      break;
    }
    case 1067: { // a group text
      if (!state.groups.has(body.thread_id))
        state.groups.set(body.thread_id, { thread_id: body.thread_id, name: `Group ${body.thread_id}`, unread: 0 });
      const g = state.groups.get(body.thread_id);
      const items = fromPush(body, body.fromuid);
      const fresh = items.filter((m) => !thread(g.thread_id).has(m.id));
      addMessages(g.thread_id, items);
      if (state.openGroup === g.thread_id) markGroupRead(g.thread_id);
      else g.unread += fresh.length;
      render();
      break;
    }
    case 1069: groupEvent(body); break;
    default: break; // receipts, images: not shown by this client
  }
}

// 1069: the groups this user is in change (docs/protocol.md §6.6)
function groupEvent(ev) {
  const mine = (ev.uids || []).includes(state.me.uid);
  const g = state.groups.get(ev.thread_id);
  if (ev.kind === "created" || (ev.kind === "joined" && mine)) {
    if (!g) state.groups.set(ev.thread_id, { thread_id: ev.thread_id, name: ev.name, unread: 0 });
  } else if ((ev.kind === "removed" || ev.kind === "left") && mine) {
    state.groups.delete(ev.thread_id);
    if (state.openGroup === ev.thread_id) state.openGroup = null;
  } else if (ev.kind === "updated" && g) {
    g.name = ev.name;
  }
  render();
}

function befriend(f, threadId, items) {
  state.friends.set(f.uid, f);
  state.requests.delete(f.uid);
  const t = state.threads.get(f.uid) || { thread_id: threadId, unread: 0 };
  t.thread_id = threadId;
  t.unread += items.filter((m) => m.sender !== state.me.uid && !thread(threadId).has(m.id)).length;
  state.threads.set(f.uid, t);
  addMessages(threadId, items);
  render();
}

function showChatError(e) { $("chat-error").textContent = e.message; }

// request(id, body) -> the reply; throws a sentence. err.unknown: the request may have been
// done (no reply came, or 1019: the outcome is unknown).
async function request(id, body) {
  let r;
  if (!state.conn) throw Object.assign(new Error(say.network("chat server", "not connected")), { unknown: false });
  try { r = await state.conn.request(id, body); } catch (e) {
    throw Object.assign(new Error(say.network("chat server", e.message)), { unknown: true });
  }
  if (r.error !== 0) throw Object.assign(new Error(say.of(r.error, r)), { unknown: r.error === 1019 });
  return r;
}

async function threadOf(uid) {
  let t = state.threads.get(uid);
  if (!t) {
    const r = await request(1027, { uid: state.me.uid, other_id: uid });
    t = { thread_id: r.thread_id, unread: 0 };
    state.threads.set(uid, t);
  }
  return t;
}

// Loads the thread's messages after the newest one held (1029 pages ascending).
async function loadHistory(threadId) {
  const t = thread(threadId);
  let cursor = 0;
  for (const id of t.keys()) cursor = Math.max(cursor, id);
  for (;;) {
    const r = await request(1029, { thread_id: threadId, message_id: cursor });
    addMessages(threadId, fromPush(r));
    if (!r.load_more || !(r.last_message_id > cursor)) break;
    cursor = r.last_message_id;
  }
}

async function markRead(uid) { markThread(state.threads.get(uid)); }
async function markGroupRead(tid) { markThread(state.groups.get(tid)); }

// Moves the read cursor (1085) of t ({thread_id, unread}) to its newest message held.
function markThread(t) {
  if (!t) return;
  let last = 0;
  for (const id of thread(t.thread_id).keys()) last = Math.max(last, id);
  t.unread = 0;
  if (last > 0) request(1085, { thread_id: t.thread_id, message_id: last }).catch(() => {});
}

async function openChat(uid) {
  state.open = uid;
  state.openGroup = null;
  $("chat-error").textContent = "";
  $("screen-main").classList.add("chatting");
  render();
  try {
    const t = await threadOf(uid);
    await loadHistory(t.thread_id);
    if (state.open === uid) { markRead(uid); render(true); }
  } catch (e) { showChatError(e); }
}

async function openGroup(tid) {
  state.open = null;
  state.openGroup = tid;
  $("chat-error").textContent = "";
  $("screen-main").classList.add("chatting");
  render();
  try {
    await loadHistory(tid);
    if (state.openGroup === tid) { markGroupRead(tid); render(true); }
  } catch (e) { showChatError(e); }
}

let uniq = 0;
// A send whose outcome is unknown (no reply, or 1019) may have been stored: sending the same
// text to the same chat again reuses its unique_id, so the server stores it once and
// answers with the first message (docs/protocol.md §6.3: resends are idempotent).
let unsent = null; // {chat, text, unique_id}
async function send(text) {
  const chat = state.openGroup ? `g${state.openGroup}` : `u${state.open}`;
  const unique_id = unsent && unsent.chat === chat && unsent.text === text ? unsent.unique_id
    : `w${Date.now().toString(36)}${(uniq++).toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  unsent = { chat, text, unique_id };
  try {
    await sendItem(text, unique_id);
    unsent = null;
  } catch (e) {
    if (!e.unknown) unsent = null;
    throw e;
  }
}

async function sendItem(text, unique_id) {
  const text_array = [{ content: text, unique_id }];
  if (state.openGroup) {
    const tid = state.openGroup;
    const r = await request(1065, { fromuid: state.me.uid, thread_id: tid, text_array });
    addMessages(tid, fromPush(r, state.me.uid));
  } else {
    const uid = state.open;
    const t = await threadOf(uid);
    const r = await request(1017, { fromuid: state.me.uid, touid: uid, thread_id: t.thread_id, text_array });
    addMessages(t.thread_id, fromPush(r, state.me.uid));
  }
  render(true);
}

// 1061: a group of name with the friends ticked in the new-group form
async function createGroup(name, members) {
  const r = await request(1061, { uid: state.me.uid, name, members });
  state.groups.set(r.thread_id, { thread_id: r.thread_id, name: r.name, unread: 0 });
  openGroup(r.thread_id);
}

// ---- rendering -----------------------------------------------------------------------

function el(tag, { dataset, ...props } = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  Object.assign(e.dataset, dataset || {});
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const nameOf = (f) => f.back || f.nick || f.name || `#${f.uid}`;

function render(toBottom) {
  if (!state.me) return;
  $("requests").replaceChildren(...[...state.requests.values()].map((a) => {
    const b = el("button", { type: "button", textContent: "Accept", className: "accept" });
    b.onclick = () => busy(b, $("search-error"), async () => {
      const r = await request(1013, { fromuid: state.me.uid, touid: a.uid });
      befriend({ uid: r.uid, name: r.name, nick: r.nick }, r.thread_id, fromPush(r));
    });
    return el("li", { dataset: { uid: a.uid } },
      el("span", {}, el("b", { textContent: a.nick || a.name }), a.desc ? el("span", { className: "muted", textContent: ` “${a.desc}”` }) : null), b);
  }));
  $("friends").replaceChildren(...[...state.friends.values()].map((f) => {
    const t = state.threads.get(f.uid);
    const li = el("li", { className: state.open === f.uid ? "active" : "", dataset: { uid: f.uid } },
      el("span", { textContent: nameOf(f) }),
      t && t.unread > 0 ? el("span", { className: "badge", textContent: String(t.unread) }) : null);
    li.onclick = () => openChat(f.uid);
    return li;
  }));
  $("groups").replaceChildren(...[...state.groups.values()].map((g) => {
    const li = el("li", { className: state.openGroup === g.thread_id ? "active" : "", dataset: { thread: g.thread_id } },
      el("span", { textContent: g.name }),
      g.unread > 0 ? el("span", { className: "badge", textContent: String(g.unread) }) : null);
    li.onclick = () => openGroup(g.thread_id);
    return li;
  }));
  const ticked = new Set([...document.querySelectorAll("#group-members input:checked")].map((i) => i.value));
  $("group-members").replaceChildren(...[...state.friends.values()].map((f) =>
    el("label", { className: "check" }, el("input", { type: "checkbox", value: String(f.uid),
      checked: ticked.has(String(f.uid)) }), ` ${nameOf(f)}`)));
  const f = state.open && state.friends.get(state.open);
  const g = state.openGroup && state.groups.get(state.openGroup);
  $("chat-title").textContent = f ? nameOf(f) : g ? g.name : "Pick a friend to chat";
  $("send-form").hidden = !f && !g;
  const t = f ? state.threads.get(f.uid) : g;
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = t ? [...thread(t.thread_id).values()].sort((a, b) => a.id - b.id) : [];
  const who = (uid) => (state.friends.has(uid) ? nameOf(state.friends.get(uid)) : `#${uid}`);
  list.replaceChildren(...items.map((m) => el("li", { className: m.sender === state.me.uid ? "mine" : "", dataset: { id: m.id } },
    m.image ? "[image]" : m.content, el("span", { className: "time",
      textContent: g && m.sender !== state.me.uid ? `${who(m.sender)} · ${m.time || ""}` : m.time || "" }))));
  if (toBottom || nearBottom) list.scrollTop = list.scrollHeight;
}

// ---- forms ---------------------------------------------------------------------------

function wire() {
  $("login-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("login-submit"), $("login-error"), async () => {
      const email = $("login-email").value.trim(), password = $("login-password").value;
      checked(checks.login({ email, password }));
      const creds = { email, passwd: xor(password) };
      const session = await openSession(creds);
      state.generation++;
      state.creds = creds;
      $("login-info").textContent = "";
      install(session);
    });
  };

  const getCode = (prefix) => () => busy($(`${prefix}-getcode`), $(`${prefix}-error`), async () => {
    $(`${prefix}-info`).textContent = "";
    const email = $(`${prefix}-email`).value.trim();
    checked(checks.getCode(email));
    const r = await gateOk("/get_varifycode", { email });
    $(`${prefix}-info`).textContent = `A code was mailed to ${r.email}`;
  });
  $("register-getcode").onclick = getCode("register");
  $("reset-getcode").onclick = getCode("reset");

  $("register-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("register-submit"), $("register-error"), async () => {
      const f = { user: $("register-user").value.trim(), email: $("register-email").value.trim(),
        password: $("register-password").value, confirm: $("register-confirm").value,
        code: $("register-code").value.trim() };
      checked(checks.register(f));
      const r = await gateOk("/user_register", { user: f.user, email: f.email, passwd: xor(f.password),
        confirm: xor(f.confirm), varifycode: f.code });
      location.hash = "#login";
      $("login-email").value = r.email;
      $("login-info").textContent = `Account ${r.user} created; log in`;
    });
  };

  $("reset-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("reset-submit"), $("reset-error"), async () => {
      const f = { user: $("reset-user").value.trim(), email: $("reset-email").value.trim(),
        password: $("reset-password").value, code: $("reset-code").value.trim() };
      checked(checks.reset(f));
      const r = await gateOk("/reset_pwd", { user: f.user, email: f.email, passwd: xor(f.password), varifycode: f.code });
      location.hash = "#login";
      $("login-email").value = r.email;
      $("login-info").textContent = "Password changed; log in";
    });
  };

  let found = null;
  $("search-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("search-submit"), $("search-error"), async () => {
      $("search-result").hidden = true;
      const text = $("search-text").value.trim();
      const bad = checks.search(text);
      if (bad) throw new Error(bad);
      found = await request(1007, { uid: text });
      $("search-name").textContent = found.nick || found.name;
      $("search-uid").textContent = `${found.name} · #${found.uid}`;
      $("search-info").textContent = "";
      $("search-add").hidden = found.uid === state.me.uid || state.friends.has(found.uid);
      $("search-result").hidden = false;
    });
  };
  $("search-add").onclick = () => busy($("search-add"), $("search-error"), async () => {
    await request(1009, { uid: state.me.uid, touid: found.uid, applyname: $("search-greeting").value.trim() });
    $("search-info").textContent = "Friend request sent";
  });

  $("send-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("send-submit"), $("chat-error"), async () => {
      const text = $("send-text").value;
      const bad = checks.text(text);
      if (bad) throw new Error(bad);
      await send(text);
      $("send-text").value = "";
    });
  };
  $("send-text").onkeydown = (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("send-form").requestSubmit(); }
  };
  $("group-form").onsubmit = (ev) => {
    ev.preventDefault();
    busy($("group-submit"), $("group-error"), async () => {
      const name = $("group-name").value.trim();
      if (!name) throw new Error(GROUP_NAME_EMPTY);
      const members = [...document.querySelectorAll("#group-members input:checked")].map((i) => Number(i.value));
      await createGroup(name, members);
      $("group-name").value = "";
      for (const i of document.querySelectorAll("#group-members input")) i.checked = false;
      $("group-new").open = false;
    });
  };
  $("back").onclick = () => { state.open = state.openGroup = null; $("screen-main").classList.remove("chatting"); render(); };
  $("logout").onclick = () => logout("");

  const route = () => {
    if (state.me || document.body.dataset.state === "reconnecting") return;
    const name = location.hash.slice(1);
    showScreen(["register", "reset"].includes(name) ? name : "login");
  };
  window.onhashchange = route;
  route();
}

async function start() {
  setState("login");
  wire();
  try {
    const r = await fetch("/web/settings.json");
    if (r.ok) Object.assign(settings, await r.json());
  } catch { /* the defaults above */ }
}

start();
