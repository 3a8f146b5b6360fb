/**
 * Test data both sides of the suite compute: the cases (in Node) and the
 * fixture handler (also inside njs 0.7.9, so: function declarations only, no
 * Node built-ins). Bodies come from noise(), which has no short period: a
 * repeated or misplaced block never compares equal.
 */

/** Adler-32: no crypto in njs 0.7.9's web APIs, and this needs only + and %. */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    // 3800 keeps b far below 2^53 between reductions, so a and b stay exact.
    const end = Math.min(i + 3800, n);
    for (; i < end; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return b * 65536 + a;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function noise(size: number, seed?: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = (seed === undefined ? 0x9e3779b9 : seed) | 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

/** The 256 byte values in order. */
export function allBytes(): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(256);
  for (let i = 0; i < 256; i++) out[i] = i;
  return out;
}
