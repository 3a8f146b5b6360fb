/**
 * `--watch` for every command (serve, apache run, nginx run): watches the files the handler is
 * made of (handlerInputs: esbuild's metafile inputs, packages left out) and, on a change, calls
 * `reload` — each command's SIGHUP path, which rebuilds, starts the new generation while the old
 * one serves, then drains the old one and runs its close(). A build error is that reload's one
 * line; the old code keeps serving and the files stay watched.
 *
 * fs.watch on the inputs' directories (not recursive, not node_modules), debounced; a file counts
 * as changed only when its content differs from what was last built (an editor's save without a
 * change, or a touch, reloads nothing). The compile cache lives outside the source tree, so our
 * own builds never wake the watcher.
 */
import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { handlerInputs, type Preload } from './load.js';

export const WATCH_DEBOUNCE_MS = 150;

export interface WatchOptions {
  /** The handler module. */
  handler: string;
  preload?: readonly Preload[];
  /** The command's graceful reload (it prints its own outcome). */
  reload(): Promise<unknown>;
  /** One line on stderr: `tsgi serve: watching 3 files`. */
  say(line: string): void;
  debounceMs?: number;
}

export interface Watching {
  /** The files watched now. */
  readonly files: readonly string[];
  close(): void;
}

function digest(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return 'missing';
  }
}

/** Starts watching; resolves once the watchers are in place (throws the build's one line if the handler does not compile). */
export async function watchHandler(o: WatchOptions): Promise<Watching> {
  const debounce = o.debounceMs ?? WATCH_DEBOUNCE_MS;
  let files: string[] = [];
  const seen = new Map<string, string>();
  let watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> | undefined;
  let again = false;
  let closed = false;

  const arm = (list: string[]): void => {
    for (const w of watchers) w.close();
    watchers = [];
    files = list;
    for (const f of list) if (!seen.has(f)) seen.set(f, digest(f));
    const byDir = new Map<string, Set<string>>();
    for (const f of list) {
      const d = dirname(f);
      if (!byDir.has(d)) byDir.set(d, new Set());
      byDir.get(d)!.add(basename(f));
    }
    for (const [dir, names] of byDir) {
      try {
        const w = watch(dir, { persistent: false }, (_event, name) => {
          // No name (some platforms): any change in the directory may be ours.
          if (name === null || names.has(name.toString())) schedule();
        });
        w.on('error', () => {});
        watchers.push(w);
      } catch {
        // A directory gone since the build: the next successful build watches what is there.
      }
    }
  };

  const changed = (): boolean => {
    let any = false;
    for (const f of files) {
      const d = digest(f);
      if (d !== seen.get(f)) {
        seen.set(f, d);
        any = true;
      }
    }
    return any;
  };

  const run = async (): Promise<void> => {
    if (closed || !changed()) return;
    await o.reload();
    if (closed) return;
    // Imports may have come or gone; on a build error keep watching what we had (and the handler).
    try {
      arm(await handlerInputs(o.handler, o.preload));
    } catch {
      arm(files);
    }
  };

  function schedule(): void {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (busy) {
        again = true;
        return;
      }
      busy = run()
        .catch((err: unknown) => o.say(`watch: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`))
        .finally(() => {
          busy = undefined;
          if (again) {
            again = false;
            schedule();
          }
        });
    }, debounce);
  }

  arm(await handlerInputs(o.handler, o.preload));
  o.say(`watching ${files.length} file${files.length === 1 ? '' : 's'} for changes`);
  return {
    get files() {
      return files;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}
