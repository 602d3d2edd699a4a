/**
 * Decodes a UTF-8 slice of a buffer. Buffer#utf8Slice skips toString()'s argument normalisation, which
 * dominates for the short values of a row; it is not in the typings but exists in every Node release
 * floe supports (the fallback keeps floe correct if it ever goes away).
 */
type SliceableBuffer = Buffer & { utf8Slice(start: number, end: number): string };

const hasUtf8Slice = typeof (Buffer.prototype as Partial<SliceableBuffer>).utf8Slice === 'function';

export const utf8 = hasUtf8Slice
  ? (buf: Buffer, start: number, end: number): string => (buf as SliceableBuffer).utf8Slice(start, end)
  : (buf: Buffer, start: number, end: number): string => buf.toString('utf8', start, end);
