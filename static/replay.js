// The replay player of a session page: loads the recording a page at a time, shows it as psql
// would, plays it back in (scaled) real time, seeks, steps and jumps to errors and risky
// statements, and follows a live session over server-sent events.
//
// Every recorded string is attacker-controlled: it only ever reaches the page through
// textContent / createTextNode. Nothing here builds HTML from strings.
"use strict";

(function () {
  const root = document.getElementById("player");
  if (!root) return;

  const sessionId = root.dataset.session;
  const database = root.dataset.database;
  let lengthMs = Math.max(1, Number(root.dataset.lengthMs) || 1);
  const wantedSeq = root.dataset.seq === "" ? null : Number(root.dataset.seq);

  const el = (id) => document.getElementById(id);
  const transcript = el("transcript");
  const markers = el("markers");
  const timeline = el("timeline");
  const timelineCursor = el("timeline-cursor");
  const position = el("position");
  const loadState = el("load-state");
  const playButton = el("play");
  const speedSelect = el("speed");
  const noiseToggle = el("show-noise");

  // All entries loaded so far, in order; nodes[i] is entries[i]'s element once shown.
  const entries = [];
  const nodes = [];
  // See "shown entries and the current one" below.
  let shown = -1;
  let current = -1;
  let playing = false;
  let timer = null;
  let loading = true;
  let live = false;
  let statements = 0;
  // When the player is at the end, new entries (more pages, live ones) are shown as they come.
  let following = true;

  // ---- building nodes, text only ----

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  const KEYWORDS = new Set(("select from where and or not insert into values update set delete " +
    "create alter drop table index view sequence schema database role user grant revoke on to " +
    "begin commit rollback savepoint release start transaction as join left right inner outer " +
    "full cross using group by order having limit offset union all distinct case when then else " +
    "end is null true false in exists between like ilike returning with recursive copy truncate " +
    "primary key foreign references default check unique constraint cascade restrict if " +
    "function procedure returns language do execute prepare deallocate declare cursor fetch " +
    "close move analyze explain vacuum show reset lock listen notify unlisten password " +
    "asc desc nulls first last over partition window filter conflict nothing system temp " +
    "temporary unlogged only lateral natural").split(" "));

  // Splits SQL into spans: keywords, strings, numbers, comments, quoted names, parameters.
  function highlight(sql) {
    const frag = document.createDocumentFragment();
    // Dollar-quoted bodies ($$ … $$, $tag$ … $tag$) are strings, as PostgreSQL reads them.
    const re = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?|\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?(?:\$\3\$|$))|("(?:[^"]|"")*"?)|(\$\d+)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_$]*)/g;
    let last = 0;
    let m;
    while ((m = re.exec(sql)) !== null) {
      if (m[0].length === 0) { re.lastIndex++; continue; }
      if (m.index > last) frag.appendChild(document.createTextNode(sql.slice(last, m.index)));
      let cls = null;
      if (m[1]) cls = "sql-comment";
      else if (m[2]) cls = "sql-string";
      else if (m[4]) cls = "sql-ident";
      else if (m[5]) cls = "sql-param";
      else if (m[6]) cls = "sql-number";
      else if (m[7] && KEYWORDS.has(m[7].toLowerCase())) cls = "sql-keyword";
      if (cls) frag.appendChild(node("span", cls, m[0]));
      else frag.appendChild(document.createTextNode(m[0]));
      last = m.index + m[0].length;
    }
    if (last < sql.length) frag.appendChild(document.createTextNode(sql.slice(last)));
    return frag;
  }

  function clock(ms) {
    const total = Math.floor(ms / 1000);
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    const frac = String(ms % 1000).padStart(3, "0");
    const mm = String(m).padStart(2, "0"), ss = String(s).padStart(2, "0");
    return (h > 0 ? h + ":" + mm : m) + ":" + ss + "." + frac;
  }

  function millis(us) {
    return (us / 1000).toFixed(3) + " ms";
  }

  function resultTable(result) {
    const wrap = node("div", "result");
    if (result.columns.length > 0 || result.rows.length > 0) {
      const table = node("table", "rows");
      const head = node("tr");
      const width = Math.max(result.columns.length,
        ...result.rows.map((r) => r.length), 0);
      for (let i = 0; i < width; i++) {
        const c = result.columns[i];
        const th = node("th", null, c ? c.name : "?column?");
        if (c) th.title = c.type_name;
        head.appendChild(th);
      }
      const thead = node("thead");
      thead.appendChild(head);
      table.appendChild(thead);
      const body = node("tbody");
      for (const row of result.rows) {
        const tr = node("tr");
        for (let i = 0; i < width; i++) {
          const value = row[i];
          const td = node("td", null, value === null || value === undefined ? "" : value);
          const c = result.columns[i];
          if (c && c.numeric) td.className = "num";
          if (value === null) td.classList.add("null");
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      table.appendChild(body);
      wrap.appendChild(table);
      const shown = result.rows.length;
      const total = shown + result.rows_omitted;
      let footer = "(" + total + (total === 1 ? " row)" : " rows)");
      wrap.appendChild(node("div", "row-count", footer));
      if (result.rows_omitted > 0) {
        wrap.appendChild(node("div", "omitted",
          result.rows_omitted + " more " + (result.rows_omitted === 1 ? "row" : "rows") +
          " not recorded (recording cap)"));
      }
    }
    if (result.copy) {
      const c = result.copy;
      const box = node("div", "copy");
      box.appendChild(node("div", "copy-head",
        "COPY " + (c.direction === "in" ? "from the client" : "to the client") +
        (c.binary ? " (binary)" : "") +
        (c.rows !== null ? ": " + c.rows + " rows, " + c.bytes + " bytes" : "") +
        (c.outcome ? ", " + c.outcome : "")));
      if (c.data.length > 0) box.appendChild(node("pre", "copy-data", c.data.join("")));
      if (c.chunks_omitted > 0) box.appendChild(node("div", "omitted", c.chunks_omitted + " more chunks not recorded"));
      wrap.appendChild(box);
    }
    if (result.tag && !(result.columns.length > 0 && /^(SELECT|FETCH) /.test(result.tag))) {
      wrap.appendChild(node("div", "tag", result.tag));
    }
    return wrap;
  }

  function message(m, sql, className) {
    const box = node("div", className);
    // psql's default verbosity: the SQLSTATE of errors, none for notices ("00000").
    const code = m.code && m.code !== "00000" ? m.code + ": " : "";
    box.appendChild(node("div", "msg-main", m.severity + ":  " + code + m.message));
    if (m.position && sql) {
      // psql shows the line of the error with a caret under the position (in characters).
      const chars = Array.from(sql);
      const before = chars.slice(0, m.position - 1).join("");
      const lineNo = before.split("\n").length;
      const lineStart = before.lastIndexOf("\n") + 1;
      const line = sql.split("\n")[lineNo - 1] || "";
      const prefix = "LINE " + lineNo + ": ";
      box.appendChild(node("pre", "msg-line", prefix + line + "\n" +
        " ".repeat(prefix.length + Array.from(before.slice(lineStart)).length) + "^"));
    }
    if (m.detail) box.appendChild(node("div", "msg-extra", "DETAIL:  " + m.detail));
    if (m.hint) box.appendChild(node("div", "msg-extra", "HINT:  " + m.hint));
    return box;
  }

  function statementNode(s) {
    const n = node("article", "entry stmt");
    if (s.error) n.classList.add("has-error");
    if (s.risks.length > 0) n.classList.add("risky");
    if (s.noise) n.classList.add("noise");
    const meta = node("div", "meta");
    meta.appendChild(node("span", "offset", "+" + clock(s.offset_ms)));
    meta.appendChild(node("span", "at", s.at.replace("T", " ").replace("Z", " UTC")));
    meta.appendChild(node("span", "class", s.class));
    meta.appendChild(node("span", "took", millis(s.duration_us)));
    for (const r of s.risks) meta.appendChild(node("span", "badge revoked", r));
    if (s.noise) meta.appendChild(node("span", "badge", "client introspection"));
    n.appendChild(meta);
    const pre = node("pre", "sql");
    pre.appendChild(node("span", "prompt", database + "=" + s.prompt + "> "));
    pre.appendChild(highlight(s.sql));
    n.appendChild(pre);
    if (s.sql_note) n.appendChild(node("div", "omitted", "SQL " + s.sql_note));
    if (s.params.length > 0) {
      if (s.inlined) {
        const inl = node("details", "inlined");
        inl.open = true;
        inl.appendChild(node("summary", null, "with its parameters written in"));
        const p = node("pre", "sql");
        p.appendChild(highlight(s.inlined));
        inl.appendChild(p);
        n.appendChild(inl);
      }
      const t = node("table", "params");
      for (const p of s.params) {
        const tr = node("tr");
        tr.appendChild(node("td", "pname", p.name));
        tr.appendChild(node("td", "ptype", p.type_name));
        const v = node("td", p.value === null ? "pvalue null" : "pvalue", p.value === null ? "NULL" : p.value);
        tr.appendChild(v);
        tr.appendChild(node("td", "pnote", p.note || ""));
        t.appendChild(tr);
      }
      n.appendChild(t);
    }
    for (const r of s.results) n.appendChild(resultTable(r));
    if (s.results_omitted > 0) n.appendChild(node("div", "omitted", s.results_omitted + " more results not recorded"));
    for (const m of s.notices) n.appendChild(message(m, null, "notice-msg"));
    if (s.error) n.appendChild(message(s.error, s.sql, "error-msg"));
    if (s.results.length === 0 && !s.error && s.tag) n.appendChild(node("div", "tag", s.tag));
    if (s.interrupted) {
      n.classList.add("interrupted");
      n.appendChild(node("div", "error-msg", "(no answer: the session ended while this statement ran; see its end below)"));
    }
    n.appendChild(node("div", "timing", "Time: " + millis(s.duration_us)));
    return n;
  }

  function eventNode(e) {
    const n = node("div", "entry event " + e.what);
    if (e.noise) n.classList.add("noise");
    if (e.message) {
      n.appendChild(message(e.message, null, e.what === "error" ? "error-msg" : "notice-msg"));
    } else {
      n.appendChild(node("span", "offset", "+" + clock(e.offset_ms) + " "));
      n.appendChild(node("span", "event-text", "-- " + e.text));
    }
    return n;
  }

  function build(i) {
    if (!nodes[i]) {
      const e = entries[i];
      nodes[i] = e.kind === "statement" ? statementNode(e) : eventNode(e);
      nodes[i].dataset.index = i;
      nodes[i].dataset.seq = e.seq;
      if (i === wantedIndex) nodes[i].classList.add("wanted");
      if (i === current) nodes[i].classList.add("current");
    }
    return nodes[i];
  }

  // Entries lo..=hi are on the page, at most MAX_ON_PAGE of them: a session of 100,000
  // statements must not put 100,000 elements in the page. Nodes taken off are dropped, and
  // rebuilt from their entry if they come back. Bars at both ends say what is off the page
  // and bring it back.
  const MAX_ON_PAGE = 1500;
  let lo = 0;
  let hi = -1;
  const earlierBar = node("button", "window-bar");
  earlierBar.type = "button";
  const laterBar = node("button", "window-bar");
  laterBar.type = "button";
  transcript.appendChild(earlierBar);
  transcript.appendChild(laterBar);

  function drop(k) {
    if (nodes[k]) {
      nodes[k].remove();
      nodes[k] = undefined;
    }
  }

  // Puts exactly entries a..=b (b <= shown) on the page, reusing what is there.
  function place(a, b) {
    if (b < a || b < lo || a > hi) {
      for (let k = lo; k <= hi; k++) drop(k);
      lo = a;
      hi = a - 1;
    }
    for (let k = lo; k < Math.min(a, hi + 1); k++) drop(k);
    for (let k = hi; k > b && k >= lo; k--) drop(k);
    if (a < lo) {
      const frag = document.createDocumentFragment();
      for (let k = a; k < lo; k++) frag.appendChild(build(k));
      earlierBar.after(frag);
    }
    if (b > hi) {
      const frag = document.createDocumentFragment();
      for (let k = Math.max(hi + 1, a); k <= b; k++) frag.appendChild(build(k));
      laterBar.before(frag);
    }
    lo = a;
    hi = b;
    updateBars();
  }

  function updateBars() {
    const earlier = hi >= lo ? lo : 0;
    const later = shown - Math.max(hi, lo - 1);
    earlierBar.hidden = earlier <= 0;
    earlierBar.textContent = "↑ " + earlier + " earlier entries are off the page: show more";
    laterBar.hidden = later <= 0;
    laterBar.textContent = "↓ " + later + " later entries are off the page: show more";
  }

  // The window moved to hold entry i, keeping as much of what is there as fits.
  function reveal(i) {
    if (i < 0 || (i >= lo && i <= hi)) return;
    if (i > hi) {
      const b = Math.max(i, Math.min(shown, hi));
      place(Math.max(lo, b - MAX_ON_PAGE + 1, i - MAX_ON_PAGE + 1), b);
    } else {
      place(i, Math.min(hi, i + MAX_ON_PAGE - 1));
    }
  }

  earlierBar.addEventListener("click", () => {
    const a = Math.max(0, lo - MAX_ON_PAGE / 3);
    place(a, Math.min(hi, a + MAX_ON_PAGE - 1));
    if (nodes[lo + (MAX_ON_PAGE / 3)]) nodes[lo + MAX_ON_PAGE / 3].scrollIntoView({ block: "start" });
  });
  laterBar.addEventListener("click", () => {
    const b = Math.min(shown, hi + MAX_ON_PAGE / 3);
    place(Math.max(lo, b - MAX_ON_PAGE + 1), b);
  });

  // ---- shown entries and the current one ----
  // Entries 0..=shown are on the page; `current` is the highlighted one. Stepping and jumping
  // move `current` (showing more if needed); seeking and playing move the playhead, which
  // hides what comes after it.

  function isStatement(i) {
    const e = entries[i];
    return e.kind === "statement" && (noiseToggle.checked || !e.noise);
  }

  function isVisible(i) {
    return noiseToggle.checked || !entries[i].noise;
  }

  // How many statements come up to entry i (counted once, when entries arrive).
  function statementIndex(i) {
    return i < 0 ? 0 : entries[Math.min(i, entries.length - 1)].nth;
  }

  // Moves the playhead: entries after it leave the page; entries up to it may be shown.
  function showUpTo(i) {
    i = Math.min(i, entries.length - 1);
    shown = i;
    if (hi > i) {
      // Back before the window: show the entries that lead up to the playhead.
      const a = lo <= i ? lo : Math.max(0, i - MAX_ON_PAGE / 2);
      place(a, i);
    }
    updateBars();
  }

  function setCurrent(i, scroll) {
    // The old current node, not a DOM query: a detached node that kept the class would come
    // back as a second "current".
    if (current >= 0 && nodes[current]) nodes[current].classList.remove("current");
    current = i;
    reveal(i);
    if (current >= 0 && nodes[current]) {
      nodes[current].classList.add("current");
      if (scroll) nodes[current].scrollIntoView({ block: "nearest" });
    }
    following = current === entries.length - 1 && shown === entries.length - 1;
    updatePosition();
  }

  function updatePosition() {
    const e = entries[current];
    const at = e ? e.offset_ms : 0;
    timelineCursor.style.left = Math.min(100, (at / lengthMs) * 100) + "%";
    position.textContent = "statement " + statementIndex(current) + " of " + statements +
      (loading ? "+" : "") + " · " + clock(at);
  }

  function findNext(from, test) {
    for (let i = from + 1; i < entries.length; i++) if (test(i)) return i;
    return -1;
  }

  function findPrev(from, test) {
    for (let i = from - 1; i >= 0; i--) if (test(i)) return i;
    return -1;
  }

  function jump(i) {
    if (i < 0) return false;
    pause();
    if (i > shown) showUpTo(i);
    setCurrent(i, true);
    return true;
  }

  function say(text) {
    loadState.textContent = text;
  }

  // ---- playing ----

  function pause() {
    playing = false;
    clearTimeout(timer);
    playButton.textContent = "▶ Play";
  }

  function play() {
    const speed = Number(speedSelect.value);
    if (current >= entries.length - 1) {
      showUpTo(-1);
      setCurrent(-1, false);
    } else {
      showUpTo(current);
    }
    playing = true;
    playButton.textContent = "⏸ Pause";
    if (speed === 0) {
      showUpTo(entries.length - 1);
      setCurrent(entries.length - 1, true);
      pause();
      return;
    }
    step(speed);
  }

  function step(speed) {
    if (!playing) return;
    const next = findNext(current, isVisible);
    if (next < 0) {
      if (loading || live) { timer = setTimeout(() => step(speed), 200); return; }
      pause();
      return;
    }
    const here = current >= 0 ? entries[current].offset_ms : 0;
    // Real gaps, scaled; a long idle stretch is cut to 3 s so playback never stalls.
    const wait = Math.min(3000, Math.max(0, entries[next].offset_ms - here) / speed);
    timer = setTimeout(() => {
      if (!playing) return;
      showUpTo(next);
      setCurrent(next, true);
      step(speed);
    }, wait);
  }

  // ---- markers on the timeline ----

  // Statements are drawn into at most BUCKETS marks, each showing the most serious of its
  // statements (error, then risky, then any, then introspection): a long session stays a
  // few hundred elements, and an error is never hidden behind its neighbours.
  const BUCKETS = 500;
  const RANKS = ["noise", "plain", "risky", "error"];
  let bucketRank = new Int8Array(BUCKETS).fill(-1);
  let bucketMarks = new Array(BUCKETS);

  function addMarkers(from) {
    for (let i = from; i < entries.length; i++) {
      const e = entries[i];
      if (e.kind !== "statement") continue;
      const rank = e.error ? 3 : e.risks.length > 0 ? 2 : e.noise ? 0 : 1;
      const b = Math.min(BUCKETS - 1, Math.floor((e.offset_ms / lengthMs) * BUCKETS));
      if (rank <= bucketRank[b]) continue;
      bucketRank[b] = rank;
      if (!bucketMarks[b]) {
        bucketMarks[b] = node("span", "marker");
        bucketMarks[b].style.left = (b / BUCKETS) * 100 + "%";
        markers.appendChild(bucketMarks[b]);
      }
      bucketMarks[b].className = "marker " + RANKS[rank];
    }
  }

  function redrawMarkers() {
    markers.textContent = "";
    bucketRank = new Int8Array(BUCKETS).fill(-1);
    bucketMarks = new Array(BUCKETS);
    addMarkers(0);
  }

  function append(batch) {
    const from = entries.length;
    for (const e of batch) {
      if (e.kind === "statement") statements++;
      e.nth = statements;
      entries.push(e);
      const end = e.offset_ms;
      if (end > lengthMs) {
        // A live session grows past the length the page was drawn with; the scale grows in
        // steps so that the marks are not redrawn for every new statement.
        lengthMs = Math.max(end, Math.round(lengthMs * 1.25));
        el("timeline-end").textContent = clock(lengthMs);
        redrawMarkers();
      }
    }
    addMarkers(from);
    if (following && !playing && entries.length > 0) {
      showUpTo(entries.length - 1);
      setCurrent(entries.length - 1, live);
    } else {
      updatePosition();
    }
  }

  // ---- loading ----

  async function load() {
    let cursorParam = "seq=0&status=I";
    let pages = 0;
    for (;;) {
      let page;
      try {
        const r = await fetch("/sessions/" + sessionId + "/replay?" + cursorParam, { credentials: "same-origin" });
        if (!r.ok) throw new Error("the console answered " + r.status);
        page = await r.json();
      } catch (err) {
        loading = false;
        say("The recording could not be loaded: " + err.message + ". Reload the page to try again.");
        updatePosition();
        return;
      }
      pages++;
      append(page.entries);
      if (pages === 1) openAtWantedSeq();
      if (!page.next) break;
      cursorParam = "seq=" + page.next.seq + "&status=" + page.next.status;
      if (page.live && page.entries.length === 0) {
        // Caught up with a live session: the live view takes over from here.
        loading = false;
        followLive(page.next);
        return;
      }
      say("Loading… " + statements + " statements so far");
      if (wantedSeq !== null && !wantedShown) openAtWantedSeq();
    }
    loading = false;
    if (wantedSeq !== null && !wantedShown) openAtWantedSeq();
    say(statements + " statements" + (entries.length === 0 ? "; nothing was recorded" : ""));
    // Rendered as live, but the session ended before its recording was read: it is complete.
    showEnded();
    updatePosition();
  }

  function showEnded() {
    const badge = el("live-badge");
    if (badge) { badge.textContent = "ended"; badge.className = "badge expired"; }
  }

  // A link from a search hit (`?seq=`) opens with everything shown and that statement
  // highlighted, once its page is loaded.
  let wantedShown = false;
  let wantedIndex = -1;
  function openAtWantedSeq() {
    if (wantedSeq === null || wantedShown) return;
    let best = -1;
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].seq <= wantedSeq) best = i; else break;
    }
    if (best < 0 || (best === entries.length - 1 && loading && entries[best].seq !== wantedSeq)) return;
    wantedShown = true;
    if (entries[best].noise) {
      noiseToggle.checked = true;
      transcript.classList.remove("hide-noise");
    }
    showUpTo(entries.length - 1);
    wantedIndex = best;
    if (nodes[best]) nodes[best].classList.add("wanted");
    setCurrent(best, false);
    nodes[best].scrollIntoView({ block: "center" });
  }

  function followLive(from) {
    live = true;
    say("Live: new statements appear as they run.");
    const source = new EventSource("/sessions/" + sessionId + "/live?seq=" + from.seq + "&status=" + from.status);
    source.addEventListener("entries", (ev) => {
      const batch = JSON.parse(ev.data);
      append(batch.entries);
    });
    source.addEventListener("end", () => {
      source.close();
      live = false;
      say("The session has ended. " + statements + " statements.");
      showEnded();
      updatePosition();
    });
    source.addEventListener("failed", (ev) => {
      source.close();
      live = false;
      say(ev.data);
    });
  }

  // ---- controls ----

  playButton.addEventListener("click", () => (playing ? pause() : play()));
  el("next").addEventListener("click", () => jump(findNext(current, isStatement)));
  el("prev").addEventListener("click", () => jump(findPrev(current, isStatement)));
  el("next-error").addEventListener("click", () => {
    if (!jump(findNext(current, (i) => isStatement(i) && !!entries[i].error))) say("No further error" + (loading ? " loaded yet." : "."));
  });
  el("next-risky").addEventListener("click", () => {
    if (!jump(findNext(current, (i) => isStatement(i) && entries[i].risks.length > 0))) say("No further risky statement" + (loading ? " loaded yet." : "."));
  });
  speedSelect.addEventListener("change", () => { if (playing) { pause(); play(); } });
  noiseToggle.addEventListener("change", () => {
    transcript.classList.toggle("hide-noise", !noiseToggle.checked);
    markers.classList.toggle("show-noise", noiseToggle.checked);
  });
  timeline.addEventListener("click", (ev) => {
    const box = timeline.getBoundingClientRect();
    const at = ((ev.clientX - box.left) / box.width) * lengthMs;
    let best = -1;
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].offset_ms <= at) best = i; else break;
    }
    pause();
    showUpTo(best);
    setCurrent(best, true);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement || ev.target instanceof HTMLTextAreaElement) return;
    const keys = { " ": playButton, j: el("next"), k: el("prev"), e: el("next-error"), r: el("next-risky") };
    const b = keys[ev.key];
    if (b) { ev.preventDefault(); b.click(); }
  });

  load();
})();
