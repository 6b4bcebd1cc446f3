// tests/browser/driver.mjs: headless Chromium for the browser specs, driven over the
// DevTools protocol through --remote-debugging-pipe (no npm package: the pipe carries
// the protocol's JSON messages, each ended by a NUL byte, on the child's fds 3 and 4).
// The spec talks to it over loopback HTTP: POST / with one JSON command, answered JSON.
//
//   node driver.mjs PORT_FILE     prints nothing; writes its HTTP port to PORT_FILE once ready
//
// Commands ({op, ...} -> {ok: true, ...} | {ok: false, error}):
//   page {name, width?, height?, mobile?}  a new page in a browser context of its own
//   goto {name, url}                       navigate and wait for the load event
//   eval {name, expr}                      evaluate (promises awaited) -> {value}
//   shot {name, path}                      a PNG of the page's viewport written to path
//   quit                                   close Chromium and exit
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const portFile = process.argv[2];
const profile = mkdtempSync(join(tmpdir(), "chathost-chromium-"));
const chrome = spawn(process.env.CHROMIUM || "chromium", [
  "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
  "--disable-dev-shm-usage", `--user-data-dir=${profile}`,
  // more flags from the spec (e.g. --ignore-certificate-errors for the TLS proxy's spec)
  ...(process.env.CHROMIUM_FLAGS || "").split(" ").filter(Boolean), "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let chromeErr = "";
chrome.stderr.on("data", (d) => { chromeErr = (chromeErr + d).slice(-4000); });

function quit(code) {
  try { chrome.kill("SIGKILL"); } catch { /* gone */ }
  try { rmSync(profile, { recursive: true, force: true }); } catch { /* best effort */ }
  process.exit(code);
}
chrome.on("exit", (code) => {
  process.stderr.write(`driver: chromium exited (${code}): ${chromeErr}\n`);
  quit(1);
});
// the spec's process ends (or kills us): Chromium goes with us
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => quit(0));

// ---- the DevTools protocol over the pipe ---------------------------------------------
const toChrome = chrome.stdio[3], fromChrome = chrome.stdio[4];
let nextId = 1;
const calls = new Map();
const listeners = new Set(); // fn(msg) for events
let pending = "";
fromChrome.on("data", (chunk) => {
  pending += chunk.toString("utf8");
  let i;
  while ((i = pending.indexOf("\0")) >= 0) {
    const msg = JSON.parse(pending.slice(0, i));
    pending = pending.slice(i + 1);
    if (msg.id && calls.has(msg.id)) {
      const { resolve, reject } = calls.get(msg.id);
      calls.delete(msg.id);
      if (msg.error) reject(new Error(`${msg.error.message} ${msg.error.data || ""}`.trim()));
      else resolve(msg.result);
    } else {
      for (const l of listeners) l(msg);
    }
  }
});

function cdp(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  return new Promise((resolve, reject) => {
    calls.set(id, { resolve, reject });
    toChrome.write(JSON.stringify(msg) + "\0");
  });
}

// once(sessionId, method, timeoutMs) -> {promise, cancel}: the next such event
function once(sessionId, method, timeoutMs) {
  let l, timer;
  const promise = new Promise((resolve, reject) => {
    timer = setTimeout(() => { listeners.delete(l); reject(new Error(`no ${method} in ${timeoutMs} ms`)); }, timeoutMs);
    l = (msg) => {
      if (msg.sessionId === sessionId && msg.method === method) {
        clearTimeout(timer); listeners.delete(l); resolve(msg.params);
      }
    };
    listeners.add(l);
  });
  return { promise, cancel: () => { clearTimeout(timer); listeners.delete(l); } };
}

// ---- pages ---------------------------------------------------------------------------
const pages = new Map(); // name -> {sessionId}
const logs = new Map();  // name -> console lines and exceptions (for a failing spec's message)

const ops = {
  async page({ name, width = 1100, height = 760, mobile = false }) {
    const { browserContextId } = await cdp("Target.createBrowserContext");
    const { targetId } = await cdp("Target.createTarget", { url: "about:blank", browserContextId });
    const { sessionId } = await cdp("Target.attachToTarget", { targetId, flatten: true });
    await cdp("Page.enable", {}, sessionId);
    await cdp("Runtime.enable", {}, sessionId);
    await cdp("Emulation.setDeviceMetricsOverride",
      { width, height, deviceScaleFactor: 1, mobile }, sessionId);
    pages.set(name, { sessionId });
    logs.set(name, []);
    listeners.add((msg) => {
      if (msg.sessionId !== sessionId) return;
      const log = logs.get(name);
      if (msg.method === "Runtime.consoleAPICalled")
        log.push(`console.${msg.params.type}: ${msg.params.args.map((a) => a.value ?? a.description).join(" ")}`);
      if (msg.method === "Runtime.exceptionThrown")
        log.push(`exception: ${msg.params.exceptionDetails.exception?.description || msg.params.exceptionDetails.text}`);
      if (log.length > 50) log.shift();
    });
    return {};
  },
  async goto({ name, url }) {
    const { sessionId } = page(name);
    // (the spec's HTTP client waits 30 s for an answer)
    const loaded = once(sessionId, "Page.loadEventFired", 20000);
    const r = await cdp("Page.navigate", { url }, sessionId).catch((e) => { loaded.cancel(); throw e; });
    if (r.errorText) { loaded.cancel(); throw new Error(`${url}: ${r.errorText}`); }
    // a change of the fragment alone is a same-document navigation: no load event
    if (r.loaderId) await loaded.promise; else loaded.cancel();
    return {};
  },
  async eval({ name, expr }) {
    const r = await cdp("Runtime.evaluate",
      { expression: expr, awaitPromise: true, returnByValue: true }, page(name).sessionId);
    if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description || r.exceptionDetails.text);
    return { value: r.result.value ?? null };
  },
  async shot({ name, path }) {
    const r = await cdp("Page.captureScreenshot", { format: "png" }, page(name).sessionId);
    writeFileSync(path, Buffer.from(r.data, "base64"));
    return {};
  },
  async log({ name }) { return { lines: logs.get(name) || [] }; },
  async quit() { setTimeout(() => quit(0), 10); return {}; },
};

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page named ${name}`);
  return p;
}

const server = createServer((req, res) => {
  let body = "";
  req.on("data", (d) => { body += d; });
  req.on("end", async () => {
    let out;
    try {
      const cmd = JSON.parse(body);
      if (!ops[cmd.op]) throw new Error(`unknown op ${cmd.op}`);
      out = { ok: true, ...(await ops[cmd.op](cmd)) };
    } catch (e) {
      out = { ok: false, error: String(e.message || e) };
    }
    const json = JSON.stringify(out);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
    res.end(json);
  });
});

// Ready once Chromium answers on the pipe.
cdp("Browser.getVersion").then((v) => {
  server.listen(0, "127.0.0.1", () => {
    writeFileSync(portFile, `${server.address().port} ${v.product}\n`);
  });
}, (e) => { process.stderr.write(`driver: ${e.message}\n`); quit(1); });
