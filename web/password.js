// The password obfuscation of the original client (docs/protocol.md §3.3): the clear text
// as UTF-16 code units, each XOR (n % 255) where n is the number of units. Its own inverse.
export function xor(s) {
  const key = s.length % 255;
  let out = "";
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(s.charCodeAt(i) ^ key);
  return out;
}
