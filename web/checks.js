// The desktop client's field checks before anything is sent (a port of
// scripts/client/checks.lua, same messages, same order: the first failing field is named).
// The gate checks everything again; these spare a round trip and say what is wrong.
export const USER_EMPTY = "User name is empty";
export const USER_CHARS = "User name may contain only letters and digits";
export const USER_SHAPE = "User name must be 3 to 20 characters and not only digits";
export const EMAIL_EMPTY = "E-mail address is empty";
export const EMAIL_INVALID = "E-mail address is not valid";
export const PASSWORD_INVALID = "Password must be 6 to 15 characters of letters, digits and !@#$%^&*.";
export const CONFIRM_MISMATCH = "Passwords do not match";
export const CODE_EMPTY = "Verification code is empty";
export const SEARCH_EMPTY = "Search text is empty";
export const TEXT_EMPTY = "Message is empty";

const empty = (s) => typeof s !== "string" || s.trim() === "";

// lib.validate.user_name: 3..20 of [A-Za-z0-9_-], not all digits
const userName = (s) => s.length >= 3 && s.length <= 20 && /^[A-Za-z0-9_-]+$/.test(s) && !/^\d+$/.test(s);

// lib.validate.email: the gate's shape of an address
function gateEmail(s) {
  if (s.length < 3 || s.length > 254) return false;
  const m = /^([A-Za-z0-9.%+_-]+)@([A-Za-z0-9.-]+)$/.exec(s);
  if (!m || m[1].length > 64) return false;
  if (m[1].includes("..") || m[2].includes("..")) return false;
  if (!m[2].includes(".") || /^[.-]/.test(m[2]) || /[.-]$/.test(m[2])) return false;
  return true;
}

// The Qt client's (\w+)(\.|_)?(\w*)@(\w+)(\.(\w+))+, unanchored
function qtEmail(s) {
  for (let at = s.indexOf("@"); at >= 0; at = s.indexOf("@", at + 1)) {
    if (/\w+\.?\w*$/.test(s.slice(0, at)) && /^\w+\.\w+/.test(s.slice(at + 1))) return true;
  }
  return false;
}

// Each check: value(s) -> null when fine, else the message.
export function user(s) {
  if (empty(s)) return USER_EMPTY;
  if (!/^[A-Za-z0-9]+$/.test(s)) return USER_CHARS;
  if (!userName(s)) return USER_SHAPE;
  return null;
}
export function email(s) {
  if (empty(s)) return EMAIL_EMPTY;
  if (!qtEmail(s) || !gateEmail(s)) return EMAIL_INVALID;
  return null;
}
export const loginEmail = (s) => (empty(s) ? EMAIL_EMPTY : null);
// lib.password.acceptable: 6..15 characters of [a-zA-Z0-9!@#$%^&*.]
export const password = (s) =>
  typeof s === "string" && /^[a-zA-Z0-9!@#$%^&*.]{6,15}$/.test(s) ? null : PASSWORD_INVALID;
export const confirm = (pw, c) => (pw !== c ? CONFIRM_MISMATCH : password(c));
export const code = (s) => (empty(s) ? CODE_EMPTY : null);
export const search = (s) => (empty(s) ? SEARCH_EMPTY : null);
export const text = (s) => (empty(s) ? TEXT_EMPTY : null);

// Runs [field, message|null] pairs in order -> null | {field, message}
function first(list) {
  for (const [field, message] of list) if (message) return { field, message };
  return null;
}

export const login = (f) => first([["email", loginEmail(f.email)], ["password", password(f.password)]]);
export const register = (f) => first([
  ["user", user(f.user)], ["email", email(f.email)], ["password", password(f.password)],
  ["confirm", confirm(f.password, f.confirm ?? f.password)], ["code", code(f.code)],
]);
export const reset = (f) => first([
  ["user", empty(f.user) ? USER_EMPTY : null], ["email", email(f.email)],
  ["password", password(f.password)], ["code", code(f.code)],
]);
export const getCode = (e) => first([["email", email(e)]]);
