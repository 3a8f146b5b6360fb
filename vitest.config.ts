import { defineConfig } from 'vitest/config';

// One run for every package; servers are real processes, so files run one at a time
// on this 2-core machine and cases get generous timeouts.
export default defineConfig({
  test: {
    include: ['**/test/**/*.test.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: 'forks',
    reporters: ['default'],
  },
});
