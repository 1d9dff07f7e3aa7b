// HTTP for every page: the CSRF token (read here only) and the JSON API calls.

export function csrfToken() {
  return document.cookie.split("; ").find((c) => c.startsWith("csrftoken="))?.split("=")[1] ?? "";
}

export function toLogin() {
  window.location.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
}

/** One JSON request; resolves to {ok, status, data} (data is {} when the body is not JSON). */
export async function request(method, url, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["X-CSRFToken"] = csrfToken();
  }
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, data };
}

/** The API's own words for a failed request, else `fallback`. */
export function errorDetail(result, fallback) {
  return result.data.error?.detail ?? fallback;
}

/** A page of a room's history (`after`/`before`/`limit`); throws when it cannot be had. */
export async function roomMessages(room, params) {
  const result = await request("GET", `/api/rooms/${encodeURIComponent(room)}/messages/?${new URLSearchParams(params)}`);
  if (result.status === 401) {
    toLogin();
    throw new Error("logged out");
  }
  if (!result.ok) throw new Error(`history request failed (${result.status})`);
  return result.data;
}

export const roomCreate = (name, isPrivate) => request("POST", "/api/rooms/", { name, private: isPrivate });

export const memberAdd = (room, username) =>
  request("POST", `/api/rooms/${encodeURIComponent(room)}/members/`, { username });

export const directOpen = (username) => request("POST", "/api/dms/", { username });

export const messageSearch = (q, limit) => request("GET", `/api/search/?${new URLSearchParams({ q, limit: String(limit) })}`);

/** The rooms the user may read, with unread and mention counts (the sidebar keeps its members'). */
export const roomsList = () => request("GET", "/api/rooms/");

export const mentionsList = (limit = 50) => request("GET", `/api/mentions/?${new URLSearchParams({ limit: String(limit) })}`);

/** Uploads one file to the room (POST .../attachments/, multipart field `file`), reporting
 * progress as 0..1; XMLHttpRequest because fetch cannot tell upload progress. `done` resolves to
 * {ok, status, data} like request(); `abort()` cancels (done then says `aborted`). */
export function uploadAttachment(room, file, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve) => {
    const finish = (extra) => {
      let data = {};
      try {
        data = JSON.parse(xhr.responseText || "{}");
      } catch {
        data = {};
      }
      resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, data, ...extra });
    };
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => finish({}));
    xhr.addEventListener("error", () => finish({ networkError: true }));
    xhr.addEventListener("abort", () => finish({ aborted: true }));
  });
  xhr.open("POST", `/api/rooms/${encodeURIComponent(room)}/attachments/`);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  const form = new FormData();
  form.append("file", file, file.name || "file");
  xhr.send(form);
  return { done, abort: () => xhr.abort() };
}
