// Every error the web client can meet as one clear sentence (a port of
// scripts/client/sentences.lua): the server's codes (docs/protocol.md §2), a reply's details
// (retry_after, field) filled in, and the client's own failures.
export const BY_CODE = {
  1001: "The server could not read the request",
  1002: "A server this needs is not answering; try again in a moment",
  1003: "The verification code has expired or was never sent; request a new one",
  1004: "The verification code is wrong",
  1005: "That user name or e-mail address is already registered",
  1006: "Passwords do not match",
  1007: "That user name and e-mail address do not belong to the same account",
  1008: "The password could not be changed; try again",
  1009: "Wrong e-mail or password",
  1010: "Your session has expired; log in again",
  1011: "No such user",
  1012: "The chat could not be created; try again",
  1013: "The chat history could not be loaded; try again",
  1014: "You are not logged in to the chat server",
  1015: "Not allowed: you are not friends, or there is no such friend request",
  1016: "Invalid %s",
  1017: "Too many attempts; try again in %s seconds",
  1018: "The server is busy; try again",
  1019: "The server had an internal error; try again later",
  1100: "No such image (or its upload expired)",
  1101: "The image is larger than the server takes",
  1102: "The server does not take files of that type",
  1103: "Your storage on the server is full, or too many uploads are unfinished",
  1104: "The server refused a piece of the file; send it again",
  1105: "The server could not store the file; try again later",
  1106: "That image is not in a chat of yours",
  1107: "That image is still being uploaded; try again when it has arrived",
  1108: "That file name is taken; send the image again",
};

// What the protocol's field names are to a person (1016 says which field).
export const FIELDS = {
  user: "user name", email: "e-mail address", passwd: "password",
  confirm: "password confirmation", varifycode: "verification code",
  nick: "nickname", icon: "icon", sex: "sex", uid: "user id", touid: "user id",
  fromuid: "user id", other_id: "user id", applyname: "greeting", bakname: "remark",
  back: "remark", content: "message text", text_array: "message", unique_id: "message id",
  thread_id: "chat", message_id: "message position", token: "login token",
  body_len: "request size", name: "group name", members: "members", role: "role",
};

export const KICKED = "You were signed out: your account logged in somewhere else.";
export const LOST = "The connection to the chat server was lost; reconnecting…";
export const GAVE_UP = "The chat server cannot be reached; log in again later";
export const BAD_REPLY = "The server's reply could not be read";
export const NO_WS = "The chat server offers no WebSocket connection (its ws_port is not set)";

// of(code, reply?) -> the sentence for a server error code
export function of(code, reply = {}) {
  const s = BY_CODE[code];
  if (!s) return `The server answered with error ${code}`;
  if (code === 1016) {
    const f = typeof reply.field === "string" ? FIELDS[reply.field] || reply.field : "request";
    return s.replace("%s", f);
  }
  if (code === 1017) {
    const n = Number(reply.retry_after);
    if (!Number.isFinite(n)) return "Too many attempts; try again later";
    return s.replace("%s", String(Math.ceil(n)));
  }
  return s;
}

// network(what, err) -> a failure to talk to a server
export const network = (what, err) =>
  err === "timeout" ? `The ${what} did not answer in time` : `Cannot reach the ${what}${err ? ` (${err})` : ""}`;

// http(status, body?) -> an HTTP answer that is no route's reply (§3.1)
export function http(status, body) {
  if (body && typeof body.error === "number" && body.error >= 1000) return of(body.error, body);
  return `The gate answered HTTP ${status}`;
}
