// One WebSocket connection to a chat server (docs/protocol.md §5.5): each message is one
// text message {"id": msg_id, "body": {...}}. A request's reply is the message with id + 1
// (requests of one id are answered in order); anything else is a push.
export class ChatConn {
  // onPush(id, body), onClose(code, reason): the connection ended (not called after close())
  constructor(url, { onPush, onClose, timeoutMs = 15000 }) {
    this.url = url;
    this.onPush = onPush;
    this.onClose = onClose;
    this.timeoutMs = timeoutMs;
    this.waiting = new Map(); // reply id -> [{resolve, reject, timer}]
    this.closed = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(this.url); } catch (e) { reject(new Error(String(e.message || e))); return; }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        this.failAll(new Error("connection closed"));
        if (!opened) reject(new Error(`cannot connect to ${this.url}`));
        else if (!this.closed) { this.closed = true; this.onClose?.(ev.code, ev.reason); }
      };
    });
  }

  receive(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (!msg || typeof msg.id !== "number" || typeof msg.body !== "object") return;
    const queue = this.waiting.get(msg.id);
    if (queue && queue.length) {
      const w = queue.shift();
      clearTimeout(w.timer);
      w.resolve(msg.body);
    } else {
      this.onPush?.(msg.id, msg.body);
    }
  }

  // request(id, body) -> promise of the reply's body (rejects on timeout or a lost connection)
  request(id, body) {
    return new Promise((resolve, reject) => {
      if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        const q = this.waiting.get(id + 1) || [];
        const i = q.indexOf(w);
        if (i >= 0) q.splice(i, 1);
        reject(new Error("timeout"));
      }, this.timeoutMs);
      if (!this.waiting.has(id + 1)) this.waiting.set(id + 1, []);
      this.waiting.get(id + 1).push(w);
      this.ws.send(JSON.stringify({ id, body }));
    });
  }

  failAll(err) {
    for (const q of this.waiting.values()) for (const w of q) { clearTimeout(w.timer); w.reject(err); }
    this.waiting.clear();
  }

  close() {
    this.closed = true;
    this.failAll(new Error("closed"));
    try { this.ws?.close(1000); } catch { /* already closed */ }
  }
}
