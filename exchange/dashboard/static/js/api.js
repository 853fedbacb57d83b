// Operator HTTP API (/api/v1) with a bearer credential. Every error becomes an ApiError with
// the server's stable code and message (the same error body as the websocket).
import { ApiError } from "./util.js";

export class HttpApi {
  constructor(apiKey = null, base = "/api/v1") {
    this.apiKey = apiKey;
    this.base = base;
  }

  async call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError("NETWORK_ERROR", `cannot reach the server (${e.message})`);
    }
    let data = null;
    const text = await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!resp.ok) {
      const err = data && data.error;
      if (err) throw new ApiError(err.code, err.message, resp.status);
      throw new ApiError(`HTTP_${resp.status}`, `${method} ${path}: ${resp.statusText || "failed"}`, resp.status);
    }
    return data;
  }

  get(path) { return this.call("GET", path); }
  post(path, body = {}) { return this.call("POST", path, body); }
  put(path, body = {}) { return this.call("PUT", path, body); }
  del(path) { return this.call("DELETE", path); }
}

export const publicApi = new HttpApi(null);
