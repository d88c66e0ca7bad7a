/**
 * Text edits of a rules file that keep the user's comments, key order,
 * indentation and line endings. Each edit works on the parse tree of a valid
 * file and the caller verifies the result by parsing it again.
 *
 * The common layout (one rule per line, closing brace on its own line) gets
 * line-based edits: a new rule becomes a new line before the brace, a removed
 * rule takes its line (and its trailing `// comment`) with it, and nothing else
 * moves. Anything else falls back to jsonc-parser's `modify`.
 *
 * @module
 */

import { applyEdits, type Node } from "jsonc-parser";
import { modify } from "jsonc-parser";

interface Style {
  indent: string;
  eol: string;
  tabSize: number;
  insertSpaces: boolean;
}

function detectStyle(text: string): Style {
  const eol = text.includes("\r\n")
    ? "\r\n"
    : !text.includes("\n") && text.includes("\r")
    ? "\r"
    : "\n";
  const m = /^([ \t]+)"/m.exec(text);
  const indent = m ? m[1] : "  ";
  const insertSpaces = !indent.includes("\t");
  return { indent, eol, insertSpaces, tabSize: insertSpaces ? indent.length : 1 };
}

function lineStart(text: string, offset: number): number {
  let i = offset;
  while (i > 0 && text[i - 1] !== "\n" && text[i - 1] !== "\r") i--;
  return i;
}

/** Offset just past the end of the line holding `offset`, including its line break. */
function nextLineStart(text: string, offset: number): number {
  let i = offset;
  while (i < text.length && text[i] !== "\n" && text[i] !== "\r") i++;
  if (text[i] === "\r") i++;
  if (text[i] === "\n") i++;
  return i;
}

const isBlank = (s: string) => /^[ \t]*$/.test(s);

/**
 * Offset of the comma between `from` and `to`, where the text holds only
 * whitespace, comments and at most one comma; -1 when there is none.
 */
function findComma(text: string, from: number, to: number): number {
  let i = from;
  while (i < to) {
    const c = text[i];
    if (c === ",") return i;
    if (c === "/" && text[i + 1] === "/") {
      while (i < to && text[i] !== "\n" && text[i] !== "\r") i++;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? to : end + 2;
    } else {
      i++;
    }
  }
  return -1;
}

function splice(text: string, from: number, to: number, content = ""): string {
  return text.slice(0, from) + content + text.slice(to);
}

function fallbackModify(text: string, path: string, value: string | undefined): string {
  const style = detectStyle(text);
  const edits = modify(text, [path], value, {
    formattingOptions: {
      insertSpaces: style.insertSpaces,
      tabSize: style.tabSize,
      eol: style.eol,
    },
  });
  return applyEdits(text, edits);
}

/** Replaces the value of an existing property (only the string itself changes). */
export function replaceValue(text: string, prop: Node, value: string): string {
  const valueNode = prop.children![1];
  return splice(text, valueNode.offset, valueNode.offset + valueNode.length, JSON.stringify(value));
}

/**
 * Replaces the key and the value of an existing property: the rule keeps its
 * place and its comments, only the two strings change.
 */
export function replaceProperty(text: string, prop: Node, key: string, value: string): string {
  const [keyNode, valueNode] = prop.children!;
  // The value comes after the key: replace it first, so the key's offsets hold.
  const withValue = splice(
    text,
    valueNode.offset,
    valueNode.offset + valueNode.length,
    JSON.stringify(value),
  );
  return splice(withValue, keyNode.offset, keyNode.offset + keyNode.length, JSON.stringify(key));
}

/**
 * Appends `"key": "value"` as the last property of the root object, or creates
 * the object when the document has none (empty or comments only).
 */
export function appendProperty(
  text: string,
  root: Node | undefined,
  key: string,
  value: string,
): string {
  const style = detectStyle(text);
  const entry = `${JSON.stringify(key)}: ${JSON.stringify(value)}`;
  if (root === undefined) {
    const body = `{${style.eol}${style.indent}${entry}${style.eol}}${style.eol}`;
    const before = text.trimEnd();
    return before === "" ? body : `${before}${style.eol}${body}`;
  }
  const close = root.offset + root.length - 1;
  const props = root.children ?? [];
  const closeLine = lineStart(text, close);
  if (text[close] !== "}" || !isBlank(text.slice(closeLine, close)) || closeLine <= root.offset) {
    return fallbackModify(text, key, value);
  }
  if (props.length === 0) {
    return splice(text, closeLine, closeLine, `${style.indent}${entry}${style.eol}`);
  }
  const last = props[props.length - 1];
  const lastEnd = last.offset + last.length;
  const comma = findComma(text, lastEnd, close);
  const lastLine = lineStart(text, last.offset);
  const indent = isBlank(text.slice(lastLine, last.offset))
    ? text.slice(lastLine, last.offset)
    : style.indent;
  const line = `${indent}${entry}${comma >= 0 ? "," : ""}${style.eol}`;
  // Insert the new line first (it is later in the text), then the comma.
  const withLine = splice(text, closeLine, closeLine, line);
  return comma >= 0 ? withLine : splice(withLine, lastEnd, lastEnd, ",");
}

/** Removes the property `prop` of the root object. */
export function removeProperty(text: string, root: Node, prop: Node): string {
  const props = root.children ?? [];
  const index = props.indexOf(prop);
  const close = root.offset + root.length - 1;
  const start = prop.offset;
  const end = prop.offset + prop.length;
  const next = props[index + 1];
  const prev = props[index - 1];
  const comma = findComma(text, end, next ? next.offset : close);
  const afterOwn = comma >= 0 ? comma + 1 : end;

  const ownLineStart = lineStart(text, start);
  const restOfLine = text.slice(afterOwn, nextLineStart(text, afterOwn)).trimEnd();
  const aloneOnLine = isBlank(text.slice(ownLineStart, start)) &&
    (isBlank(restOfLine) || /^[ \t]*\/\/.*$/.test(restOfLine)) &&
    ownLineStart > root.offset && nextLineStart(text, afterOwn) <= close;

  if (aloneOnLine) {
    let out = splice(text, ownLineStart, nextLineStart(text, afterOwn));
    // The last rule had no comma: the one before it now must not have one either.
    if (!next && comma < 0 && prev) {
      const prevComma = findComma(text, prev.offset + prev.length, start);
      if (prevComma >= 0) out = splice(out, prevComma, prevComma + 1);
    }
    return out;
  }
  if (comma >= 0) {
    let to = comma + 1;
    while (text[to] === " " || text[to] === "\t") to++;
    return splice(text, start, to);
  }
  if (prev) {
    const prevComma = findComma(text, prev.offset + prev.length, start);
    if (prevComma >= 0) return splice(text, prevComma, end);
  }
  return fallbackModify(text, prop.children![0].value as string, undefined);
}
