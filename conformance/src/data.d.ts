/**
 * Test data both sides of the suite compute: the cases (in Node) and the
 * fixture handler (also inside njs 0.7.9, so: function declarations only, no
 * Node built-ins). Bodies come from noise(), which has no short period: a
 * repeated or misplaced block never compares equal.
 */
/** Adler-32: no crypto in njs 0.7.9's web APIs, and this needs only + and %. */
export declare function adler32(bytes: Uint8Array): number;
/** Deterministic pseudo-random bytes (xorshift32). */
export declare function noise(size: number, seed?: number): Uint8Array<ArrayBuffer>;
/** The 256 byte values in order. */
export declare function allBytes(): Uint8Array<ArrayBuffer>;
