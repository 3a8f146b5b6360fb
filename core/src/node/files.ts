import { chmodSync, renameSync, writeFileSync } from 'node:fs';

/**
 * Writes `file` beside itself, then renames it into place: a reader (another worker importing it, a
 * test reading a state file, nginx reading an include) never sees a half-written file. With `mode`,
 * the file has exactly that mode (also when a stale temp file was there), before it is visible.
 */
export function writeFileBeside(file: string, data: string | Uint8Array, mode?: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, mode === undefined ? undefined : { mode });
  if (mode !== undefined) chmodSync(tmp, mode);
  renameSync(tmp, file);
}
