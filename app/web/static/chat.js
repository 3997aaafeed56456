// The chat page: ask, read the streamed answer (SSE over fetch), open cited passages in
// a side panel, ask the last question again ("Regenerate"), search one's conversations
// (the sidebar), keyboard shortcuts, rate answers (thumbs up or down, a thumbs down
// with a category and a comment), copy an answer. Answers show their markdown through
// markdown.js (elements and text nodes).
// Loaded from 'self' (strict CSP). Everything from the server is written with
// textContent, never as HTML.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function csrf() {
  return document.body.dataset.csrf || "";
}

// -- citations ---------------------------------------------------------------------

function citationList(sources) {
  const list = el("ol", "citations");
  for (const source of sources) {
    const item = el("li");
    const link = el("a", "cite", "[" + source.number + "] " + source.title);
    link.href = "/api/v1/chunks/" + encodeURIComponent(source.chunk_id);
    link.dataset.chunk = String(source.chunk_id);
    const where = ["version " + source.version];
    if (source.section) where.push(source.section);
    if (source.page !== null && source.page !== undefined) where.push("page " + source.page);
    item.append(link, " ", el("span", "muted", where.join(", ")));
    list.append(item);
  }
  return list;
}

// The cited passage opens in a side panel: beside the answers on a wide screen, over
// them (with a backdrop) on a narrow one. Focus goes to the panel and back to the
// citation when it closes (its Close button, Escape, or the backdrop).
let passageOpener = null;

function passageIsOverlay() {
  return window.matchMedia("(max-width: 70rem)").matches;
}

function closePassage() {
  const panel = document.getElementById("passage-panel");
  if (!panel || panel.hidden) return false;
  panel.hidden = true;
  document.getElementById("passage-backdrop").hidden = true;
  document.getElementById("chat-layout").classList.remove("with-passage");
  if (passageOpener && document.contains(passageOpener)) passageOpener.focus();
  passageOpener = null;
  return true;
}

async function openChunk(chunkId, opener) {
  const panel = document.getElementById("passage-panel");
  const title = document.getElementById("chunk-title");
  const meta = document.getElementById("chunk-meta");
  const text = document.getElementById("chunk-text");
  passageOpener = opener || null;
  title.textContent = "Loading…";
  meta.textContent = "";
  text.textContent = "";
  panel.hidden = false;
  document.getElementById("passage-backdrop").hidden = !passageIsOverlay();
  document.getElementById("chat-layout").classList.add("with-passage");
  panel.focus();
  try {
    const response = await fetch("/api/v1/chunks/" + encodeURIComponent(chunkId), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      title.textContent = response.status === 404 ? "This passage no longer exists" : "Could not load the passage";
      return;
    }
    const chunk = await response.json();
    title.textContent = chunk.title;
    const where = ["version " + chunk.version];
    if (chunk.section) where.push(chunk.section);
    if (chunk.page !== null) where.push("page " + chunk.page);
    if (!chunk.searchable) where.push("replaced by a newer version or retired");
    meta.textContent = where.join(" · ");
    text.textContent = chunk.text;
  } catch (error) {
    title.textContent = "Could not load the passage";
  }
}

// Keep Tab inside the panel while it covers the page (narrow screens).
function trapPassageFocus(event) {
  const panel = document.getElementById("passage-panel");
  if (event.key !== "Tab" || !panel || panel.hidden || !passageIsOverlay()) return;
  const focusable = [...panel.querySelectorAll("button, a[href]")];
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && (document.activeElement === first || document.activeElement === panel)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && document.activeElement === last) {
    event.preventDefault();
    first.focus();
  }
}

// -- the sidebar: the reader's conversations and the search over them ----------------

function setSidebar(open) {
  const sidebar = document.getElementById("sidebar");
  const toggle = document.getElementById("sidebar-toggle");
  if (!sidebar) return;
  sidebar.classList.toggle("open", open);
  if (toggle) toggle.setAttribute("aria-expanded", String(open));
}

function conversationItem(hit) {
  const item = el("li");
  const link = el("a", "", hit.title);
  link.href = "/c/" + encodeURIComponent(hit.id);
  item.append(link);
  if (hit.snippet) item.append(el("span", "snippet", hit.snippet));
  return item;
}

function wireSearch() {
  const box = document.getElementById("search-box");
  if (!box) return;
  const results = document.getElementById("search-results");
  const recent = document.getElementById("conversation-list");
  const status = document.getElementById("search-status");
  let timer = 0;
  let asked = 0; // answers to an older query that arrive late are dropped
  async function search() {
    const query = box.value.trim();
    const mine = ++asked;
    if (!query) {
      results.hidden = true;
      results.replaceChildren();
      recent.hidden = false;
      status.textContent = "";
      return;
    }
    status.textContent = "Searching…";
    let response;
    try {
      response = await fetch("/api/v1/conversations/search?q=" + encodeURIComponent(query), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
    } catch (error) {
      if (mine === asked) status.textContent = "Search failed: the connection was lost.";
      return;
    }
    if (mine !== asked) return;
    if (response.status === 401) {
      window.location.reload();
      return;
    }
    if (!response.ok) {
      status.textContent = "Search failed: " + (await errorText(response)) + ".";
      return;
    }
    const hits = await response.json();
    results.replaceChildren(...hits.map(conversationItem));
    results.hidden = false;
    recent.hidden = true;
    status.textContent = hits.length === 1 ? "1 conversation found" : hits.length + " conversations found";
  }
  box.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, 250);
  });
  box.form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(timer);
    search();
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && box.value) {
      event.stopPropagation();
      box.value = "";
      search();
    }
  });
}

// Ctrl/Cmd+K: search; Ctrl/Cmd+Shift+O: a new conversation; Escape: close the passage.
function wireShortcuts() {
  document.addEventListener("keydown", (event) => {
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key.toLowerCase();
    if (mod && !event.shiftKey && !event.altKey && key === "k") {
      const box = document.getElementById("search-box");
      if (!box) return;
      event.preventDefault();
      setSidebar(true);
      box.focus();
      box.select();
    } else if (mod && event.shiftKey && !event.altKey && key === "o") {
      const form = document.getElementById("new-conversation");
      if (!form) return;
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      if (closePassage()) event.preventDefault();
    } else {
      trapPassageFocus(event);
    }
  });
}

// -- answers: markdown, copy, in view -------------------------------------------------

const answerTexts = new WeakMap(); // an answer's .message-content -> its text as written

function showAnswer(content, text) {
  answerTexts.set(content, text);
  content.replaceChildren(window.clinchatMarkdown.render(text));
}

// "Copy answer" and its status, after the answer's disclaimer (before its thumbs).
function addCopy(item) {
  const disclaimer = item.querySelector(".disclaimer");
  if (!disclaimer || item.querySelector(".copy-answer")) return;
  const tools = el("div", "answer-tools");
  const button = el("button", "secondary copy-answer", "Copy answer");
  button.type = "button";
  const status = el("span", "copy-status muted");
  status.setAttribute("role", "status");
  tools.append(button, status);
  disclaimer.after(tools);
}

// "Regenerate" under the last answer of one's own conversation: its question asked
// again through the same stream (a new question and answer; the old answer stays).
function placeRegenerate() {
  if (!document.getElementById("ask")) return; // read-only (break-glass)
  document.querySelectorAll("button.regenerate").forEach((button) => button.remove());
  const answers = document.querySelectorAll("#messages > .message.assistant");
  const last = answers[answers.length - 1];
  if (!last || !last.previousElementSibling) return;
  const tools = last.querySelector(".answer-tools");
  if (!tools) return;
  const button = el("button", "secondary regenerate", "Regenerate");
  button.type = "button";
  button.setAttribute("aria-describedby", "regenerate-help");
  tools.append(button);
}

function lastQuestion(button) {
  const answer = button.closest(".message.assistant");
  let item = answer ? answer.previousElementSibling : null;
  while (item && !item.classList.contains("user")) item = item.previousElementSibling;
  const content = item ? item.querySelector(".message-content") : null;
  return content ? content.textContent.trim() : "";
}

async function copyAnswer(button) {
  const item = button.closest(".message");
  const content = item.querySelector(".message-content");
  const status = item.querySelector(".copy-status");
  const text = answerTexts.has(content) ? answerTexts.get(content) : content.textContent;
  status.textContent = "";
  try {
    await navigator.clipboard.writeText(window.clinchatMarkdown.plain(text));
    status.textContent = "Copied";
  } catch (error) {
    // no clipboard (a page not served over https) or no permission
    status.textContent = "Not copied: select the text and copy it.";
  }
}

// The bottom of the space above the question box, which stays at the foot of the screen.
function visibleBottom() {
  const form = document.getElementById("ask");
  return (form ? form.getBoundingClientRect().top : window.innerHeight) - 8;
}

// Scroll so that the end of `item` sits just above the question box.
function reveal(item) {
  const hidden = item.getBoundingClientRect().bottom - visibleBottom();
  if (hidden > 0) window.scrollBy(0, Math.ceil(hidden));
}

// Change `item`, and keep its end in view if it was (a reader following the answer);
// one who has scrolled away to read something else is left there.
function following(item, change) {
  const inView = item.getBoundingClientRect().bottom <= visibleBottom() + 40;
  change();
  if (inView) reveal(item);
}

// -- feedback on answers -------------------------------------------------------------

// The thumbs under an answer that has just streamed in: a copy of the page's template
// (only the conversation's owner has one), bound to the stored message's id.
function feedbackControls(messageId) {
  const template = document.getElementById("feedback-template");
  if (!template || !messageId) return null;
  const controls = template.content.firstElementChild.cloneNode(true);
  controls.dataset.message = messageId;
  return controls;
}

async function sendFeedback(controls, body) {
  const chat = document.getElementById("chat");
  const status = controls.querySelector(".feedback-status");
  status.textContent = "Sending…";
  const url =
    "/api/v1/conversations/" + encodeURIComponent(chat.dataset.conversation) +
    "/messages/" + encodeURIComponent(controls.dataset.message) + "/feedback";
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
  } catch (error) {
    status.textContent = "Not sent: the connection was lost.";
    return false;
  }
  if (response.status === 401) {
    window.location.reload(); // signed out (idle timeout): the sign-in page
    return false;
  }
  if (!response.ok) {
    status.textContent = "Not sent: " + (await errorText(response)) + ".";
    return false;
  }
  controls.querySelector(".feedback-up").setAttribute("aria-pressed", String(body.rating === "up"));
  controls.querySelector(".feedback-down").setAttribute("aria-pressed", String(body.rating === "down"));
  status.textContent = body.rating === "up" ? "Thank you." : "Thank you: sent for review.";
  return true;
}

function toggleFeedbackForm(controls, open) {
  const form = controls.querySelector(".feedback-form");
  form.hidden = !open;
  controls.querySelector(".feedback-down").setAttribute("aria-expanded", String(open));
  if (open) form.querySelector("select").focus();
}

function wireFeedback() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest(".feedback-up, .feedback-down");
    if (!button) return;
    const controls = button.closest(".feedback");
    if (button.classList.contains("feedback-up")) {
      toggleFeedbackForm(controls, false);
      sendFeedback(controls, { rating: "up" });
    } else {
      toggleFeedbackForm(controls, controls.querySelector(".feedback-form").hidden);
    }
  });
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.feedback-form");
    if (!form) return;
    event.preventDefault();
    const controls = form.closest(".feedback");
    const send = form.querySelector("button[type=submit]");
    send.disabled = true;
    try {
      const sent = await sendFeedback(controls, {
        rating: "down",
        category: form.elements.category.value || null,
        comment: form.elements.comment.value.trim() || null,
      });
      if (sent) {
        form.reset();
        toggleFeedbackForm(controls, false);
      }
    } finally {
      send.disabled = false;
    }
  });
}

// -- the event stream ----------------------------------------------------------------

// Parse "event: x\ndata: {...}" blocks out of the text received so far; returns the rest.
function takeEvents(buffer, onEvent) {
  let cut;
  while ((cut = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, cut);
    buffer = buffer.slice(cut + 2);
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trim());
    }
    if (data.length) onEvent(name, JSON.parse(data.join("\n")));
  }
  return buffer;
}

function assistantItem(chat) {
  const item = el("li", "message assistant");
  item.append(el("div", "message-role muted", "ClinChat"));
  const content = el("div", "message-content markdown");
  item.append(content);
  document.getElementById("messages").append(item);
  return { item, content, disclaimer: chat.dataset.disclaimer || "" };
}

// The conversation's title as the server has it now (the first question names it).
function showTitle(title) {
  const heading = document.getElementById("conversation-title");
  if (typeof title !== "string" || !title || !heading || heading.textContent === title) return;
  heading.textContent = title;
  document.title = title + " · ClinChat";
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (error) {
    // not JSON
  }
  return "the request failed (" + response.status + ")";
}

async function ask(chat, question, status) {
  const messages = document.getElementById("messages");
  const mine = el("li", "message user");
  mine.append(el("div", "message-role muted", "You"), el("div", "message-content", question));
  messages.append(mine);
  const answer = assistantItem(chat);
  const cursor = el("span", "typing", "…");
  answer.content.append(cursor);
  reveal(answer.item);
  status.textContent = "Searching the documents…";

  const response = await fetch(
    "/api/v1/conversations/" + encodeURIComponent(chat.dataset.conversation) + "/messages",
    {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "X-CSRF-Token": csrf(),
      },
      body: JSON.stringify({ content: question }),
    },
  );
  if (response.status === 401) {
    window.location.reload(); // signed out (idle timeout): the sign-in page
    return;
  }
  if (!response.ok || !response.body) {
    cursor.remove();
    answer.item.append(el("p", "error", "Not answered: " + (await errorText(response)) + "."));
    reveal(answer.item);
    status.textContent = "";
    return false;
  }

  let text = "";
  const onEvent = (name, data) => {
    if (name === "sources") {
      status.textContent = data.grounded ? "Answering from " + data.sources.length + " passages…" : "";
      if (data.sources.length) {
        following(answer.item, () => answer.item.append(citationList(data.sources)));
      }
    } else if (name === "delta") {
      text += data.text;
      following(answer.item, () => showAnswer(answer.content, text));
    } else if (name === "done") {
      if (!data.grounded) answer.item.append(el("p", "muted", "No document covered this question."));
      answer.item.append(el("p", "disclaimer", data.disclaimer || answer.disclaimer));
      addCopy(answer.item);
      placeRegenerate();
      const controls = feedbackControls(data.message_id);
      if (controls) answer.item.append(controls);
      status.textContent = "";
      showTitle(data.title);
      reveal(answer.item); // the whole answer: its citations, disclaimer and buttons
    } else if (name === "error") {
      answer.item.append(el("p", "error", data.message));
      reveal(answer.item);
      status.textContent = "";
    }
  };
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = takeEvents(buffer + decoder.decode(value, { stream: true }), onEvent);
  }
  cursor.remove();
  return true;
}

document.addEventListener("DOMContentLoaded", () => {
  // Deleting a conversation (home page) asks first.
  document.querySelectorAll("form.confirm-delete").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm("Delete this conversation and all its messages?")) event.preventDefault();
    });
  });

  const chat = document.getElementById("chat");
  if (!chat) return;

  // Citation links open the passage in the side panel (the link itself is the no-script
  // fallback: the passage's JSON).
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a.cite");
    if (!link) return;
    event.preventDefault();
    openChunk(link.dataset.chunk, link);
  });
  document.getElementById("passage-close").addEventListener("click", closePassage);
  document.getElementById("passage-backdrop").addEventListener("click", closePassage);
  const toggle = document.getElementById("sidebar-toggle");
  toggle.addEventListener("click", () => {
    setSidebar(toggle.getAttribute("aria-expanded") !== "true");
  });
  wireSearch();
  wireShortcuts();

  // Stored answers: their markdown shown, a copy button under each.
  document.querySelectorAll(".message.assistant").forEach((item) => {
    const content = item.querySelector(".message-content.markdown");
    if (content) showAnswer(content, content.textContent);
    addCopy(item);
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy-answer");
    if (button) copyAnswer(button);
  });

  const form = document.getElementById("ask");
  if (!form) return; // read-only (break-glass view of another clinician's conversation)
  wireFeedback();
  const box = document.getElementById("question");
  const button = document.getElementById("ask-button");
  const status = document.getElementById("ask-status");
  let busy = false;
  async function send(question) {
    if (busy) return;
    busy = true;
    button.disabled = true;
    document.querySelectorAll("button.regenerate").forEach((b) => (b.disabled = true));
    try {
      await ask(chat, question, status);
    } catch (error) {
      status.textContent = "The connection was lost; ask again.";
    } finally {
      busy = false;
      button.disabled = false;
      document.querySelectorAll("button.regenerate").forEach((b) => (b.disabled = false));
      box.focus();
    }
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = box.value.trim();
    if (!question) return;
    box.value = "";
    send(question);
  });
  placeRegenerate();
  document.addEventListener("click", (event) => {
    const regenerate = event.target.closest("button.regenerate");
    if (!regenerate) return;
    const question = lastQuestion(regenerate);
    if (question) send(question);
  });
  // Enter sends, Shift+Enter is a new line.
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
});
