// The citation viewer's reading of a document: its text rebuilt from the chunks' stored offsets.

/**
 * The document's text around the chunk `citedId`, from each chunk's `start`/`end` (character offsets in
 * the parsed document): `{before, cited, after}`, the cited span being the chunk's exact offsets.
 *
 * Chunks overlap (chunk_overlap) and skip the whitespace between them, so the text is laid out by offset:
 * an overlap is written once, a gap becomes line breaks of its length. Returns null when the offsets do
 * not describe the chunks' text (a parser without offsets, or a table chunk that repeats its header row):
 * the viewer then lists the chunks instead.
 */
export function documentText(chunks, citedId) {
  const placed = chunks
    .map((c) => ({ id: c.chunk_id, text: c.text, start: (c.metadata || {}).start, end: (c.metadata || {}).end }))
    .sort((a, b) => a.start - b.start);
  if (!placed.every((c) => Number.isInteger(c.start) && Number.isInteger(c.end) && c.end - c.start === c.text.length)) {
    return null;
  }
  let text = "";
  for (const chunk of placed) {
    if (chunk.start > text.length) text += "\n".repeat(chunk.start - text.length);
    if (chunk.end > text.length) text += chunk.text.slice(text.length - chunk.start);
  }
  if (!placed.every((c) => text.slice(c.start, c.end) === c.text)) return null; // overlaps that disagree
  const cited = placed.find((c) => c.id === citedId);
  if (!cited) return null;
  return { before: text.slice(0, cited.start), cited: cited.text, after: text.slice(cited.end) };
}
