/**
 * A listening socket owned by a supervising process that never accepts on it:
 * its worker processes call listen() on their copy (passed as a file
 * descriptor) and accept. Because the supervisor keeps its copy open, the
 * socket outlives any one worker: while a crashed worker is being replaced,
 * connections wait in the backlog instead of being refused, and none is ever
 * handed to a process that is gone (node:cluster's round-robin handoff can
 * leave such a connection unanswered).
 */
import { lookup } from 'node:dns/promises';
import { existsSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { StartupError } from './load.js';

export interface ListenHandle {
  /** The descriptor to pass to a worker (it calls `server.listen({ fd })` on its copy). */
  fd: number;
  /** Closes this process's copy (a Unix socket's file goes with it). */
  close(): void;
}

type ListenAt = { host: string; port: number } | { path: string };

const REASONS: Record<string, string> = {
  EADDRINUSE: 'address in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'address not available',
  ENOENT: 'no such directory',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'unknown host',
};

/** What `tsgi` prints when it cannot listen: `cannot listen on 127.0.0.1:3000: address in use`. */
export function listenError(at: ListenAt, code: string | undefined): StartupError {
  const where = 'path' in at ? at.path : `${at.host}:${at.port}`;
  return new StartupError(`cannot listen on ${where}: ${(code && REASONS[code]) ?? code ?? 'unknown error'}`);
}

interface RawHandle {
  fd: number;
  close(cb?: () => void): void;
}

type CreateServerHandle = (address: string | null, port: number, addressType: number, fd?: number, flags?: number) => RawHandle | number;

/** The same internal cluster's primary uses to create the handles it shares. */
function createHandle(): CreateServerHandle {
  const create = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
  if (typeof create !== 'function') throw new StartupError('this Node version cannot share a listening socket between processes');
  return create;
}

/** Binds a Unix socket path (a file left by a crashed run is replaced); its close removes nothing. */
export function bindUnixHandle(path: string): ListenHandle {
  const create = createHandle();
  // A socket file left by a crashed run would make the bind fail.
  if (existsSync(path)) unlinkSync(path);
  const h = create(path, -1, -1);
  if (typeof h === 'number') throw listenError({ path }, getSystemErrorName(h));
  return { fd: h.fd, close: () => h.close() };
}

/**
 * Binds (does not listen on) a TCP address or a Unix socket path. A TCP bind
 * to a busy port may only fail at listen() time, in the worker: the worker
 * checks the port it got (see `checkBoundPort`).
 */
export async function bindListenHandle(at: ListenAt): Promise<ListenHandle> {
  if ('path' in at) return bindUnixHandle(at.path);
  const create = createHandle();
  let address: { address: string; family: number };
  try {
    address = await lookup(at.host);
  } catch (err) {
    throw listenError(at, (err as NodeJS.ErrnoException).code);
  }
  const h = create(address.address, at.port, address.family);
  if (typeof h === 'number') throw listenError(at, getSystemErrorName(h));
  const handle = h;
  return { fd: handle.fd, close: () => handle.close() };
}

/** In a worker that listened on an inherited TCP descriptor: a port other than the one asked for means the bind had failed. */
export function checkBoundPort(at: ListenAt, server: net.Server): void {
  if ('path' in at || at.port === 0) return;
  const a = server.address();
  if (a && typeof a === 'object' && a.port !== at.port) throw listenError(at, 'EADDRINUSE');
}
