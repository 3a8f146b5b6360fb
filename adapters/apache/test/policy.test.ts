// mod_tsgi's supervisor restarts workers by the same policy as every tsgi supervisor:
// the C back-off (mod_tsgi/tsgi_policy.h, loaded through koffi) against core's Backoff
// (core/src/node/policy.ts) on seeded random crash timelines, and the same start-up exit code.
import koffi from 'koffi';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS, BACKOFF_RESET_MS, Backoff, EXIT_STARTUP } from '@tsgi/core/node';
import { buildCodecLib } from '../src/build.js';

let reset: () => void;
let nextC: (startedUs: number, nowUs: number) => number;
let exitStartupC: () => number;

beforeAll(async () => {
  const lib = koffi.load(await buildCodecLib());
  reset = lib.func('void tsgi_test_backoff_reset(void)') as () => void;
  nextC = lib.func('long long tsgi_test_backoff_next(long long started_us, long long now_us)') as (a: number, b: number) => number;
  exitStartupC = lib.func('int tsgi_test_exit_startup(void)') as () => number;
});

/** xorshift32: a seeded timeline. */
function rng(seed: number): (n: number) => number {
  let x = seed | 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

describe("mod_tsgi's restart policy is core's (tsgi_policy.h mirrors core/src/node/policy.ts)", () => {
  it('the same exit code for a worker that cannot start', () => {
    expect(exitStartupC()).toBe(EXIT_STARTUP);
    expect(EXIT_STARTUP).toBe(78);
  });

  it('a worker that keeps crashing: at once, then 0.1 s doubling to 5 s', () => {
    reset();
    const delays = Array.from({ length: 10 }, (_, i) => nextC(i * 1000, i * 1000 + 500) / 1000);
    expect(delays).toEqual([0, BACKOFF_FIRST_MS, 200, 400, 800, 1600, 3200, BACKOFF_MAX_MS, BACKOFF_MAX_MS, BACKOFF_MAX_MS]);
  });

  it('10 s of life starts the count again', () => {
    reset();
    nextC(0, 1);
    nextC(1, 2);
    expect(nextC(2, 3) / 1000).toBe(200);
    expect(nextC(3, 3 + BACKOFF_RESET_MS * 1000) / 1000).toBe(200 * 2);
    expect(nextC(10, 10 + BACKOFF_RESET_MS * 1000 + 1) / 1000).toBe(0);
    expect(nextC(20, 21) / 1000).toBe(BACKOFF_FIRST_MS);
  });

  it('gives the delays Backoff gives on 200 seeded random crash timelines', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const ts = new Backoff();
      reset();
      let now = 1_700_000_000_000 + r(1000);
      for (let death = 0; death < 40; death++) {
        const startedAt = now;
        // Lives around the reset line, most short (a crash loop), some longer than 10 s.
        const life = r(4) === 0 ? BACKOFF_RESET_MS - 5 + r(10) : r(4) === 0 ? r(30_000) : r(2000);
        now = startedAt + life;
        const want = ts.next(startedAt, now);
        expect(nextC(startedAt * 1000, now * 1000) / 1000, `seed ${seed}, death ${death}`).toBe(want);
        now += want;
      }
    }
  });
});
