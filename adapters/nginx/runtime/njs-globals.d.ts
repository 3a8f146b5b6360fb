// What njs 0.7.9 has and njs-types 0.7.11 does not declare (checked in njs 0.7.9 itself).
interface TextEncoder {
  encode(input?: string): Uint8Array;
}
declare const TextEncoder: { new (): TextEncoder };
interface TextDecoder {
  decode(input?: ArrayBuffer | ArrayBufferView): string;
}
declare const TextDecoder: { new (label?: string, options?: { fatal?: boolean }): TextDecoder };
interface StringConstructor {
  /** A byte string of a view's bytes. njs 0.7.9 reads the view's whole buffer (offset and length ignored). */
  bytesFrom(bytes: ArrayBufferView): NjsByteString;
}
