/**
 * The metrics of all of a daemon's workers without a Node supervisor (issue 12):
 * mod_tsgi's supervisor is C in Apache's parent, so the workers share their
 * counters through a directory mod_tsgi makes for them (TSGI_OPS_DIR: 0700,
 * their user's, kept across graceful restarts, removed when Apache stops):
 * each worker keeps its own snapshot in `<pid>.json` (rewritten once per
 * event-loop turn after a counted request), and whichever worker answers the
 * metrics path adds them all up with core's mergeSnapshots. A worker that
 * left says why in its file, so its counters still count and the restarts
 * are known.
 */
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { mergeSnapshots, renderPrometheus, writeFileBeside, type MetricsSnapshot, type Operations, type PoolFigures, type RestartReason } from '@tsgi/core/node';

/**
 * `tsgi apache run`'s drain period (--drain-delay): the runner creates this file beside the bundle
 * (TSGI_HANDLER) before it asks Apache to stop; a worker that sees it answers its health path 503.
 * Anyone may do the same for an installed daemon before `apachectl graceful-stop`.
 */
export const drainFlagPath = (handler: string): string => `${handler}.draining`;

/** One worker's file. */
interface PeerFile {
  stats: MetricsSnapshot;
  state: 'ready' | 'draining';
  /** Why it exited, once it has. */
  left?: RestartReason;
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

export class Peers {
  private readonly file: string;
  private pending = false;

  private constructor(
    private readonly dir: string,
    private readonly ops: Operations,
  ) {
    this.file = join(dir, `${process.pid}.json`);
  }

  /** The shared directory of this daemon's workers; undefined (each worker counts alone) if none or not safely ours. */
  static open(dir: string | undefined, ops: Operations): Peers | undefined {
    if (!dir) return undefined;
    try {
      const st = lstatSync(dir);
      // Another user's directory (or a link) must not receive our figures, nor feed us theirs.
      if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) return undefined;
    } catch {
      return undefined;
    }
    const p = new Peers(dir, ops);
    p.write();
    return p;
  }

  /** The counters changed: the file follows within this event-loop turn. */
  changed(): void {
    if (this.pending) return;
    this.pending = true;
    setImmediate(() => {
      this.pending = false;
      this.write();
    });
  }

  private write(left?: RestartReason): void {
    const f: PeerFile = { stats: this.ops.snapshot(), state: this.ops.draining ? 'draining' : 'ready', left };
    try {
      writeFileBeside(this.file, JSON.stringify(f), 0o600);
    } catch {
      // Apache is stopping (it removes the directory): nothing to share any more
    }
  }

  /** This worker exits: its counters stay, with why it left. */
  leave(why: RestartReason): void {
    this.write(why);
  }

  private read(): { pid: number; f: PeerFile }[] {
    const out: { pid: number; f: PeerFile }[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return out;
    }
    for (const n of names) {
      const m = /^(\d+)\.json$/.exec(n);
      if (!m) continue;
      try {
        out.push({ pid: Number(m[1]), f: JSON.parse(readFileSync(join(this.dir, n), 'latin1')) as PeerFile });
      } catch {
        // being replaced, or gone: the next scrape sees it
      }
    }
    return out;
  }

  /** Every worker's figures as the metrics text; this worker's own are current. `allDraining`: the drain flag is up. */
  metrics(allDraining = false): string {
    const all: MetricsSnapshot[] = [];
    const pool: PoolFigures = { workers: {}, restarts: {} };
    const add = <K extends string>(r: Partial<Record<K, number>>, k: K): void => void (r[k] = (r[k] ?? 0) + 1);
    for (const { pid, f } of this.read()) {
      if (pid === process.pid) continue;
      const left = f.left ?? (isAlive(pid) ? undefined : 'crash');
      if (left) {
        add(pool.restarts, left);
        // Gone: what it served counts, what it held or used does not.
        all.push({ ...f.stats, inflight: 0, queued: 0, heap: 0 });
      } else {
        add(pool.workers, allDraining ? 'draining' : f.state);
        all.push(f.stats);
      }
    }
    all.push(this.ops.snapshot());
    add(pool.workers, this.ops.draining ? 'draining' : 'ready');
    return renderPrometheus(mergeSnapshots(all), pool);
  }
}
