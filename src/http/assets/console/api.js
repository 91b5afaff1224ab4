// depot's REST and GraphQL API as the console calls it: the session (token and instance, kept
// in this tab's sessionStorage only), requests carrying them, and errors turned into sentences.

const KEY = 'depot.console.session';

export function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return s && typeof s.token === 'string' ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(s) {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

// The headers every call carries: the token (depot takes it bare or as Bearer) and the
// instance it acts in.
export function authHeaders(s = session()) {
  const h = {};
  if (s) {
    h.Authorization = `Bearer ${s.token}`;
    if (s.instance) h['hypi-domain'] = s.instance;
  }
  return h;
}

// The claims of a JWT, read without checking the signature: for display only (depot checks the
// token on every request). Null when the text is not a JWT.
export function claims(token) {
  const parts = token.trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const text = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const json = new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0)));
    const v = JSON.parse(json);
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

// An error depot answered (`{"error":{"code","message"}}`), or a transport failure (status 0).
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  // From a status and the parsed (or unparsable) body.
  static of(status, body) {
    const e = body && typeof body === 'object' && body.error;
    if (e && typeof e === 'object') {
      return new ApiError(status, String(e.code || 'ERROR'), String(e.message || ''));
    }
    return new ApiError(status, `HTTP_${status}`, `depot answered ${status} without an error message`);
  }
}

// A sentence for any error, for the alert region.
export function describe(err) {
  if (err instanceof ApiError) {
    const hint = {
      UNAUTHENTICATED: ' Check the token (and that it has not expired), then sign in again.',
      FORBIDDEN: ' Your account may not do this.',
      NOT_FOUND: ' It may have been deleted, or you may not see it.',
      TOO_MANY_REQUESTS: ' Wait a moment and try again.',
    }[err.code] || '';
    const status = err.status ? ` (${err.status})` : '';
    return `${err.code}${status}: ${err.message || 'no message'}.${hint}`.replace('..', '.');
  }
  return `Unexpected error: ${err && err.message ? err.message : String(err)}`;
}

async function body(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { text };
  }
}

// One REST call. `json` is sent as the JSON body; answers 2xx as parsed JSON (null when
// empty), throws ApiError otherwise.
export async function api(method, path, { json, s } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders(s) };
  const init = { method, headers, cache: 'no-store' };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'NETWORK', `depot could not be reached (${e.message})`);
  }
  const b = await body(res);
  if (!res.ok) throw ApiError.of(res.status, b);
  return b;
}

// One GraphQL operation; its first error is thrown as an ApiError with its `extensions.code`.
export async function gql(query, variables = {}) {
  const b = await api('POST', '/graphql', { json: { query, variables } });
  if (b && Array.isArray(b.errors) && b.errors.length) {
    const e = b.errors[0];
    throw new ApiError(200, (e.extensions && e.extensions.code) || 'GRAPHQL', e.message);
  }
  return b.data;
}

// `/a/b c` -> `/a/b%20c`: each segment of a directory path encoded for a URL.
export function encodePath(dir) {
  return dir
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .map((s) => `/${s}`)
    .join('');
}

// A string literal for ArcQL (only \' and \\ are escapes).
export function arcqlString(s) {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}
