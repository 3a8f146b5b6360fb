/**
 * Types of the njs runtime (type-only: nothing here reaches the bundle).
 * `r` is njs-types' NginxHTTPRequest (njs-types 0.7.11, the oldest 0.7.x
 * published; what 0.7.9 lacks of it is never used here, see README.md).
 */

/** The nginx request object of a js_content / js_set call. */
export type NjsRequest = NginxHTTPRequest;

/**
 * A header list: flat [lowerName, value, ...] in insertion order, as the Fetch
 * standard keeps it. `_latin1` marks a list holding a value with
 * U+0080..U+00FF (the writer sends those as one byte each).
 */
export type HeaderList = string[] & { _latin1?: boolean };

/** What a body is kept as until it is read: nothing, text, bytes or a stream. */
export type BodySource = null | string | Uint8Array | RuntimeStream;

/** State shared by Request and Response (the body mixin). */
export interface BodyHolder {
  _body: BodySource;
  _used?: boolean;
  /** The header list, until `.headers` turns it into a Headers object. */
  _list?: HeaderList;
  _headers?: RuntimeHeaders;
  /** A bridge-made request: builds its header list on first use. */
  _makeHeaders?: (src: NjsRequest) => HeaderList;
  _src?: NjsRequest;
}

export interface RuntimeHeaders {
  _list: HeaderList;
  get(name: string): string | null;
}

export interface RuntimeResponse extends BodyHolder {
  status: number;
  statusText: string;
  ok: boolean;
  type: string;
  readonly headers: RuntimeHeaders;
}

export interface RuntimeRequest extends BodyHolder {
  method: string;
  _url?: string;
  _makeUrl?: (src: NjsRequest) => string;
  _signal?: unknown;
  readonly url: string;
  readonly headers: RuntimeHeaders;
}

export interface StreamReader {
  read(): Promise<{ value: unknown; done: boolean }>;
  cancel(reason?: unknown): Promise<void>;
  releaseLock(): void;
}

export interface RuntimeStream {
  readonly locked: boolean;
  _disturbed: boolean;
  _state: 'readable' | 'closed' | 'errored';
  getReader(): StreamReader;
  cancel(reason?: unknown): Promise<void>;
  tee(): RuntimeStream[];
}

/** The tsgi context as the runtime builds it (core contract.ts Context). */
export interface RuntimeContext {
  readonly server: 'nginx';
  readonly ip: string;
  user: string | undefined;
  readonly id: string;
  readonly env: Record<string, string | undefined>;
  readonly basePath: string;
  waitUntil(promise: unknown): void;
}

/** A handler as the runtime calls it (core contract.ts Handler, with the runtime's own types). */
export interface RuntimeHandler {
  fetch(request: RuntimeRequest, ctx: RuntimeContext): unknown;
  authenticate?(request: RuntimeRequest, ctx: RuntimeContext): unknown;
  authorize?(request: RuntimeRequest, ctx: RuntimeContext): unknown;
  log?(entry: unknown, ctx: RuntimeContext): unknown;
  init?(ctx: { server: 'nginx'; env: Record<string, string | undefined> }): unknown;
  close?(): unknown;
}

/** The error log of a request (core pipeline.ts ErrorLogger). */
export type ErrorLogger = (message: string, error?: unknown) => void;
