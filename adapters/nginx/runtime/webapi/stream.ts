/* eslint-disable @typescript-eslint/no-this-alias -- njs 0.7.9 code: closures capture the stream */
/**
 * Enough of the Streams standard for handlers that stream: an underlying
 * source with start/pull/cancel, a default controller, a default reader,
 * a high-water mark in chunks (1 by default), tee() for clone().
 */

type Settle = { res: (v: { value: unknown; done: boolean }) => void; rej: (e: unknown) => void };

interface Source {
  start?(c: Controller): unknown;
  pull?(c: Controller): unknown;
  cancel?(reason: unknown): unknown;
  type?: unknown;
}

interface Controller {
  enqueue(chunk: unknown): void;
  close(): void;
  error(e: unknown): void;
  readonly desiredSize: number | null;
}

interface Reader {
  closed: Promise<unknown>;
  read(): Promise<{ value: unknown; done: boolean }>;
  releaseLock(): void;
  cancel(reason?: unknown): Promise<void>;
  _closedResolve: (v: unknown) => void;
  _closedReject: (e: unknown) => void;
  _stream: Stream | null;
}

interface Stream {
  _source: Source;
  _state: 'readable' | 'closed' | 'errored';
  _queue: unknown[];
  /** Pending reads. */
  _reads: Settle[];
  _error: unknown;
  _reader: Reader | null;
  _disturbed: boolean;
  _started: boolean;
  _pulling: boolean;
  _pullAgain: boolean;
  _closeRequested: boolean;
  _highWaterMark: number;
  _controller: Controller;
  readonly locked: boolean;
  getReader(opts?: unknown): Reader;
  cancel(reason?: unknown): Promise<void>;
}

type StreamCtor = new (source?: Source) => Stream;

let installed = false;

export function ReadableStream(this: Stream, source?: Source, strategy?: { highWaterMark?: unknown }): void {
  if (!(this instanceof (ReadableStream as unknown as StreamCtor))) throw new TypeError("Failed to construct 'ReadableStream'");
  if (!installed) streamInternals().install();
  if (source != null && source.type !== undefined) throw new RangeError('Only default ReadableStreams are supported');
  const self = this;
  self._source = source == null ? {} : source;
  self._state = 'readable';
  self._queue = [];
  self._reads = [];
  self._error = undefined;
  self._reader = null;
  self._disturbed = false;
  self._started = false;
  self._pulling = false;
  self._pullAgain = false;
  self._closeRequested = false;
  self._highWaterMark = strategy != null && strategy.highWaterMark !== undefined ? Number(strategy.highWaterMark) : 1;
  const c = {
    enqueue: function (chunk: unknown) {
      if (self._closeRequested || self._state !== 'readable') throw new TypeError('Invalid state: ReadableStream is closed');
      if (self._reads.length) self._reads.shift()!.res({ value: chunk, done: false });
      else self._queue.push(chunk);
      streamInternals().pull(self);
    },
    close: function () {
      if (self._closeRequested || self._state !== 'readable') throw new TypeError('Invalid state: ReadableStream is closed');
      self._closeRequested = true;
      if (!self._queue.length) streamInternals().close(self);
    },
    error: function (e: unknown) {
      streamInternals().error(self, e);
    },
  } as Controller;
  Object.defineProperty(c, 'desiredSize', {
    get: function () {
      return self._state === 'errored' ? null : self._state === 'closed' ? 0 : self._highWaterMark - self._queue.length;
    },
  });
  self._controller = c;
  let started: unknown;
  try {
    started = typeof self._source.start === 'function' ? self._source.start(c) : undefined;
  } catch (e) {
    streamInternals().error(self, e);
    throw e;
  }
  Promise.resolve(started).then(
    function () {
      self._started = true;
      streamInternals().pull(self);
    },
    function (e: unknown) {
      streamInternals().error(self, e);
    },
  );
}

interface StreamInternals {
  install(): void;
  close(s: Stream): void;
  error(s: Stream, e: unknown): void;
  /** Calls the source's pull when a read waits or the queue is below the high-water mark. */
  pull(s: Stream): void;
  cancel(s: Stream, reason: unknown): Promise<void>;
}

let internals: StreamInternals | null = null;

/** The stream machinery, built on first use in a request. */
function streamInternals(): StreamInternals {
  if (internals !== null) return internals;
  function close(s: Stream): void {
    if (s._state !== 'readable') return;
    s._state = 'closed';
    const reads = s._reads;
    s._reads = [];
    for (let i = 0; i < reads.length; i++) reads[i].res({ value: undefined, done: true });
    if (s._reader) s._reader._closedResolve(undefined);
  }
  function error(s: Stream, e: unknown): void {
    if (s._state !== 'readable') return;
    s._state = 'errored';
    s._error = e;
    s._queue = [];
    const reads = s._reads;
    s._reads = [];
    for (let i = 0; i < reads.length; i++) reads[i].rej(e);
    if (s._reader) s._reader._closedReject(e);
  }
  function pull(s: Stream): void {
    if (!s._started || s._state !== 'readable' || s._closeRequested) return;
    if (!(s._reads.length > 0 || s._highWaterMark - s._queue.length > 0)) return;
    if (typeof s._source.pull !== 'function') return;
    if (s._pulling) {
      s._pullAgain = true;
      return;
    }
    s._pulling = true;
    let r: unknown;
    try {
      r = s._source.pull(s._controller);
    } catch (e) {
      error(s, e);
      return;
    }
    Promise.resolve(r).then(
      function () {
        s._pulling = false;
        if (s._pullAgain) {
          s._pullAgain = false;
          pull(s);
        }
      },
      function (e: unknown) {
        error(s, e);
      },
    );
  }
  function cancel(s: Stream, reason: unknown): Promise<void> {
    s._disturbed = true;
    if (s._state === 'closed') return Promise.resolve(undefined);
    if (s._state === 'errored') return Promise.reject(s._error);
    s._queue = [];
    close(s);
    try {
      const out = typeof s._source.cancel === 'function' ? s._source.cancel(reason) : undefined;
      return Promise.resolve(out).then(function () {
        return undefined;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }
  function getReader(this: Stream, opts?: { mode?: unknown }): Reader {
    if (opts != null && opts.mode !== undefined) throw new RangeError('Only default readers are supported');
    if (this._reader) throw new TypeError('ReadableStream is locked');
    const s = this;
    let closedResolve: (v: unknown) => void = function () {};
    let closedReject: (e: unknown) => void = function () {};
    const closed = new Promise(function (a, b) {
      closedResolve = a;
      closedReject = b;
    });
    closed.catch(function () {});
    const reader: Reader = {
      closed: closed,
      _closedResolve: closedResolve,
      _closedReject: closedReject,
      read: function () {
        if (reader._stream === null) return Promise.reject(new TypeError('Reader is released'));
        s._disturbed = true;
        if (s._queue.length) {
          const v = s._queue.shift();
          if (s._closeRequested && !s._queue.length) close(s);
          else pull(s);
          return Promise.resolve({ value: v, done: false });
        }
        if (s._state === 'closed') return Promise.resolve({ value: undefined, done: true });
        if (s._state === 'errored') return Promise.reject(s._error);
        return new Promise(function (res, rej) {
          s._reads.push({ res: res, rej: rej });
          pull(s);
        });
      },
      releaseLock: function () {
        if (reader._stream === null) return;
        const reads = s._reads;
        s._reads = [];
        const e = new TypeError('Reader was released');
        for (let i = 0; i < reads.length; i++) reads[i].rej(e);
        if (s._state === 'readable') closedReject(e);
        reader._stream = null;
        s._reader = null;
      },
      cancel: function (reason?: unknown) {
        if (reader._stream === null) return Promise.reject(new TypeError('Reader is released'));
        return cancel(s, reason);
      },
      _stream: s,
    };
    if (s._state === 'closed') closedResolve(undefined);
    else if (s._state === 'errored') closedReject(s._error);
    this._reader = reader;
    return reader;
  }
  function tee(this: Stream): Stream[] {
    const reader = this.getReader();
    const branches: (Controller | null)[] = [];
    let pending = 2;
    let reading = false;
    function branch(idx: number): Stream {
      return new (ReadableStream as unknown as StreamCtor)({
        start: function (c: Controller) {
          branches[idx] = c;
        },
        pull: function () {
          if (reading) return undefined;
          reading = true;
          return reader.read().then(
            function (r) {
              reading = false;
              for (let i = 0; i < 2; i++) {
                const b = branches[i];
                if (b === null) continue;
                if (r.done) b.close();
                else b.enqueue(r.value);
              }
            },
            function (e: unknown) {
              for (let i = 0; i < 2; i++) if (branches[i]) branches[i]!.error(e);
            },
          );
        },
        cancel: function (reason: unknown) {
          branches[idx] = null;
          if (--pending === 0) return reader.cancel(reason);
          return undefined;
        },
      });
    }
    return [branch(0), branch(1)];
  }
  function install(): void {
    installed = true;
    const p = ReadableStream.prototype as unknown as Record<string, unknown>;
    Object.defineProperty(p, 'locked', {
      configurable: true,
      get: function (this: Stream) {
        return this._reader !== null;
      },
    });
    p.cancel = function (this: Stream, reason: unknown) {
      if (this._reader) return Promise.reject(new TypeError('Cannot cancel a stream that already has a reader'));
      return cancel(this, reason);
    };
    p.getReader = getReader;
    p.tee = tee;
  }
  internals = { install: install, close: close, error: error, pull: pull, cancel: cancel };
  return internals;
}
