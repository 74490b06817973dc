#!/usr/bin/env node
// Mints a Switchboard token (HS256 JWT) in a Node backend, with nothing but node:crypto.
// In your app: call mintToken() in the route that serves the page (or an /api/token route)
// after your own login check, and hand the token to the browser.
//
//   SWITCHBOARD_AUTH_SECRET=... node examples/tokens/mint-token.mjs alice 'chat:*'
//
// Prints the token. The secret is the server's --auth-secret (at least 32 bytes); it never
// leaves your backend. Verified by crates/cli/tests/it/examples.rs against a real server.
import { createHmac } from "node:crypto";

/**
 * @param {string} secret  the server's auth.hmac_secret
 * @param {string} user    the `sub` claim: the name other members see
 * @param {Record<string, string[]>} [rooms]  room pattern -> rights (join, publish, presence);
 *                         leave out for every right in every room
 * @param {number} [ttlSeconds]  lifetime; the server closes the connection with 4001 at expiry
 *                         unless the client sends a `refresh` with a new token
 */
export function mintToken(secret, user, rooms, ttlSeconds = 3600) {
  const b64url = (value) => Buffer.from(value).toString("base64url");
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = { sub: user, exp: Math.floor(Date.now() / 1000) + ttlSeconds };
  if (rooms) claims.rooms = rooms;
  const payload = b64url(JSON.stringify(claims));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const secret = process.env.SWITCHBOARD_AUTH_SECRET;
  const [user, pattern] = process.argv.slice(2);
  if (!secret || !user) {
    console.error("usage: SWITCHBOARD_AUTH_SECRET=... node mint-token.mjs USER [ROOM_PATTERN]");
    process.exit(2);
  }
  const rooms = pattern ? { [pattern]: ["join", "publish", "presence"] } : undefined;
  console.log(mintToken(secret, user, rooms));
}
