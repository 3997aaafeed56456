// Answers as markdown, safely. A small subset: paragraphs and line breaks, headings,
// ordered and unordered lists (nested by indentation), fenced code blocks, **bold**,
// *italic* and `code`. Built with createElement and text nodes only: the model's text
// never becomes HTML (no innerHTML, no attribute taken from it), so "<img onerror=...>"
// shows as the text it is. Links are not made: "[label](url)" reads "label (url)".
// Citation markers such as [1] stay as written.
// Loaded from 'self' (strict CSP) before chat.js, which uses window.clinchatMarkdown.
"use strict";

(function markdown() {
  const FENCE = /^ {0,3}(`{3,}|~{3,})/;
  const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
  const BULLET = /^([ \t]*)[-*+][ \t]+(.*)$/;
  const NUMBERED = /^([ \t]*)(\d{1,9})[.)][ \t]+(.*)$/;
  const LINK = /\[([^\]\n]+)\]\(([^()\s]+)\)/y; // sticky: matched at lastIndex
  const TICKS = /`+/y;
  const ESCAPABLE = /[\\`*_{}[\]()#+\-.!<>|~]/;
  const NESTED = 2; // spaces more than its parent's marker make an item a nested one

  function width(indent) {
    return indent.replace(/\t/g, "    ").length;
  }

  function indentOf(line) {
    return width(/^[ \t]*/.exec(line)[0]);
  }

  function listMarker(line) {
    let m = BULLET.exec(line);
    if (m) return { indent: width(m[1]), ordered: false, number: 1, text: m[2] };
    m = NUMBERED.exec(line);
    if (m) return { indent: width(m[1]), ordered: true, number: Number(m[2]), text: m[3] };
    return null;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || listMarker(line) !== null;
  }

  // -- blocks ------------------------------------------------------------------------

  // Lines from `i` on as a list (and the lists nested in it); returns [list, next line].
  function parseList(lines, i) {
    const first = listMarker(lines[i]);
    const list = { type: "list", ordered: first.ordered, start: first.number, items: [] };
    while (i < lines.length) {
      const line = lines[i];
      const item = list.items[list.items.length - 1];
      const m = listMarker(line);
      if (m) {
        if (m.indent < first.indent) break; // the parent list's next item
        if (item && m.indent >= first.indent + NESTED) {
          const [child, next] = parseList(lines, i);
          item.children.push(child);
          i = next;
          continue;
        }
        if (m.ordered !== first.ordered) break; // another kind of list begins
        list.items.push({ lines: [m.text], children: [] });
        i += 1;
        continue;
      }
      if (!line.trim()) {
        // a blank line ends the list unless an item or an indented line comes next
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j += 1;
        const after = j < lines.length ? listMarker(lines[j]) : null;
        if (j < lines.length && ((after && after.indent >= first.indent) ||
                                 (!after && indentOf(lines[j]) > first.indent))) {
          i = j;
          continue;
        }
        break;
      }
      if (indentOf(line) > first.indent || !startsBlock(line)) {
        item.lines.push(line.trim()); // the item's text goes on
        i += 1;
        continue;
      }
      break;
    }
    return [list, i];
  }

  function parse(text) {
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    const blocks = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i += 1;
      } else if ((m = FENCE.exec(line))) {
        const fence = m[1];
        const body = [];
        i += 1;
        // an unclosed fence (an answer still streaming) runs to the end
        while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
        i += 1;
        blocks.push({ type: "code", text: body.join("\n") });
      } else if ((m = HEADING.exec(line))) {
        blocks.push({ type: "heading", level: m[1].length, text: m[2] || "" });
        i += 1;
      } else if (listMarker(line)) {
        const [list, next] = parseList(lines, i);
        blocks.push(list);
        i = next;
      } else {
        const paragraph = [];
        while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) {
          paragraph.push(lines[i++].trim());
        }
        blocks.push({ type: "paragraph", lines: paragraph });
      }
    }
    return blocks;
  }

  // -- inline ------------------------------------------------------------------------

  function isSpace(c) {
    return c === undefined || /\s/.test(c);
  }

  function isWord(c) {
    return c !== undefined && /[\p{L}\p{N}]/u.test(c);
  }

  // Where the code span opened by the backticks at `from` closes, or -1. A run with no
  // closer is remembered in `unclosed`, so that a line of many costs one search each.
  function tickEnd(text, from, unclosed) {
    TICKS.lastIndex = from;
    const run = TICKS.exec(text)[0];
    const end = unclosed.has(run.length) ? -1 : text.indexOf(run, from + run.length);
    if (end < 0) unclosed.add(run.length);
    return [run, end];
  }

  // Where the emphasis opened by `mark` at `from` closes, or -1.
  function closing(text, from, mark, unclosed) {
    const c = mark[0];
    for (let j = from + 1; j < text.length; j += 1) {
      if (text[j] === "\\") {
        j += 1;
      } else if (text[j] === "`") {
        const [run, end] = tickEnd(text, j, unclosed);
        j = end < 0 ? j + run.length - 1 : end + run.length - 1;
      } else if (mark.length === 1 && text[j] === c && text[j + 1] === c) {
        j += 1; // "**" inside "*...*": a nested bold's, not the end
      } else if (text.startsWith(mark, j) && !isSpace(text[j - 1]) &&
                 !(c === "_" && isWord(text[j + mark.length]))) {
        return j;
      }
    }
    return -1;
  }

  function linkAt(text, i) {
    LINK.lastIndex = i;
    return LINK.exec(text);
  }

  // The inline markup of one line as nodes: text nodes and the elements of the subset.
  function inline(text) {
    const nodes = [];
    // backtick runs and emphasis marks found without a closer: later ones have none either
    const unclosed = new Set();
    let plain = "";
    const flush = () => {
      if (plain) nodes.push(document.createTextNode(plain));
      plain = "";
    };
    let i = 0;
    let link;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && ESCAPABLE.test(text[i + 1] || "")) {
        plain += text[i + 1];
        i += 2;
      } else if (c === "`") {
        const [run, end] = tickEnd(text, i, unclosed);
        if (end < 0) {
          plain += run;
          i += run.length;
          continue;
        }
        flush();
        const code = document.createElement("code");
        code.textContent = text.slice(i + run.length, end);
        nodes.push(code);
        i = end + run.length;
      } else if (c === "*" || c === "_") {
        const mark = text[i + 1] === c ? c + c : c;
        const start = i + mark.length;
        const opens = !isSpace(text[start]) && !(c === "_" && isWord(text[i - 1]));
        const end = opens && !unclosed.has(mark) ? closing(text, start, mark, unclosed) : -1;
        if (opens && end < 0) unclosed.add(mark);
        if (end < 0) {
          plain += mark;
          i = start;
          continue;
        }
        flush();
        const node = document.createElement(mark.length === 2 ? "strong" : "em");
        node.append(...inline(text.slice(start, end)));
        nodes.push(node);
        i = end + mark.length;
      } else if (c === "[" && (link = linkAt(text, i))) {
        const [whole, label, url] = link;
        flush();
        nodes.push(...inline(label), document.createTextNode(" (" + url + ")"));
        i += whole.length;
      } else {
        plain += c;
        i += 1;
      }
    }
    flush();
    return nodes;
  }

  function lineText(line) {
    return inline(line).map((node) => node.textContent).join("");
  }

  // -- output ------------------------------------------------------------------------

  function withBreaks(parent, lines) {
    lines.forEach((line, n) => {
      if (n) parent.append(document.createElement("br"));
      parent.append(...inline(line));
    });
    return parent;
  }

  function renderBlock(block) {
    if (block.type === "code") {
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = block.text;
      pre.append(code);
      return pre;
    }
    if (block.type === "heading") {
      // the page's own heading is h1: an answer's headings start at h2
      const heading = document.createElement("h" + Math.min(block.level + 1, 6));
      heading.append(...inline(block.text));
      return heading;
    }
    if (block.type === "list") {
      const list = document.createElement(block.ordered ? "ol" : "ul");
      if (block.ordered && block.start !== 1) list.start = block.start;
      for (const item of block.items) {
        const li = withBreaks(document.createElement("li"), item.lines);
        for (const child of item.children) li.append(renderBlock(child));
        list.append(li);
      }
      return list;
    }
    return withBreaks(document.createElement("p"), block.lines);
  }

  // The answer as nodes to put in its element (a fragment: nothing parsed as HTML).
  function render(text) {
    const fragment = document.createDocumentFragment();
    for (const block of parse(text)) fragment.append(renderBlock(block));
    return fragment;
  }

  function plainBlock(block, indent) {
    if (block.type === "code") return block.text;
    if (block.type === "heading") return lineText(block.text);
    if (block.type === "list") {
      return block.items.map((item, n) => {
        const marker = block.ordered ? block.start + n + ". " : "- ";
        const pad = "\n" + indent + " ".repeat(marker.length);
        const text = indent + marker + item.lines.map(lineText).join(pad);
        const children = item.children.map((c) => plainBlock(c, indent + " ".repeat(marker.length)));
        return [text, ...children].join("\n");
      }).join("\n");
    }
    return block.lines.map(lineText).join("\n");
  }

  // The answer as plain text (for the clipboard): the markers of bold, italic, code and
  // headings dropped, list items on lines of their own with their "-" or number.
  function plain(text) {
    return parse(text).map((block) => plainBlock(block, "")).join("\n\n");
  }

  window.clinchatMarkdown = { render, plain };
})();
