// API keys for the pages: asked for only when the server needs one (GET /v1/auth), kept in this
// browser's localStorage, sent as a bearer header on requests and as a WebSocket subprotocol
// (a browser cannot set headers on a WebSocket). Loaded before the page's own script.

// ---- state ---------------------------------------------------------------------------------

const KEY_STORAGE = "voxserve.apiKey";
const SUBPROTOCOL_SAFE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/; // what a subprotocol name may hold

let apiKey = localStorage.getItem(KEY_STORAGE) || "";

// ---- functions -----------------------------------------------------------------------------

function authHeaders(headers = {}) {
  return apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : headers;
}

function authorizedFetch(url, options = {}) {
  return fetch(url, { ...options, headers: authHeaders(options.headers || {}) });
}

// Resolves once the server takes this page's key, or needs none; asks the user until then.
// Declining leaves the key as it is: requests then fail with the server's own message.
async function ensureAccess() {
  for (;;) {
    const response = await authorizedFetch("/v1/auth").catch(() => null);
    if (!response || !response.ok) return; // unreachable, or a server without access control
    const access = await response.json();
    if (!access.required || access.authorized) return;
    const entered = window.prompt(
      apiKey ? "The server refused this API key. API key:" : "This server needs an API key:",
    );
    if (entered === null) return;
    apiKey = entered.trim();
    localStorage.setItem(KEY_STORAGE, apiKey);
  }
}

function openSocket(url) {
  if (!apiKey) return new WebSocket(url);
  // The server answers with the plain "voxserve" protocol, so the key is not echoed back.
  if (SUBPROTOCOL_SAFE.test(apiKey)) return new WebSocket(url, ["voxserve", `voxserve.key.${apiKey}`]);
  const separator = url.includes("?") ? "&" : "?";
  return new WebSocket(`${url}${separator}api_key=${encodeURIComponent(apiKey)}`);
}
