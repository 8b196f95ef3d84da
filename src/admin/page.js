// tidemark status page: polls `status` every second and redraws. Data reaches the
// page only through textContent and SVG attributes, never as markup.
"use strict";
(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fdb", "#d9822b", "#2f9e62", "#c23d5b", "#7a4fd6", "#1a9bb0", "#8c6d1f", "#555f73"];
  const WINDOW_MS = 10 * 60 * 1000;
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let polls = 0;

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function position(cp) {
    if (!cp || typeof cp !== "object") return "–";
    const logs = Object.keys(cp).sort();
    return logs.length ? logs.map((l) => l + "=" + cp[l]).join(",") : "–";
  }

  function row(cells) {
    const tr = el("tr");
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    return tr;
  }

  function renderInstances(data) {
    const rows = [];
    const projections = data.projections || {};
    for (const name of Object.keys(projections).sort()) {
      const p = projections[name];
      const instances = p.instances || {};
      for (const inst of Object.keys(instances).sort()) {
        const i = instances[inst];
        const tr = row([
          [name], [(p.logs || []).join(", ")], [inst], [position(i.checkpoint)],
          [Number(i.lag_seconds || 0).toFixed(3), "num"], [p.held_reads, "num"],
        ]);
        tr.dataset.projection = name;
        tr.dataset.instance = inst;
        tr.children[3].className = "checkpoint";
        rows.push(tr);
      }
    }
    if (!rows.length) rows.push(row([["no projections configured", "empty"]]));
    $("instances").replaceChildren(...rows);
    $("projection-count").textContent = Object.keys(projections).length;
    $("held-total").textContent = data.held_reads_total;
  }

  // A date and time with its time zone: `2026-11-29, 14:03:12 UTC`.
  const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  function when(ms) {
    return TIME_FORMAT.format(new Date(ms));
  }

  // Hold timeouts in the last minute: the route's counter now minus a minute ago
  // (or the oldest sample); a drop (a reload restarted the counters) counts from 0.
  function perMinute(times, counts) {
    if (!times || !counts || !times.length) return 0;
    const last = counts[counts.length - 1];
    if (typeof last !== "number") return 0;
    const since = times[times.length - 1] - 60000;
    let base = last;
    for (let i = 0; i < times.length; i++) {
      if (times[i] >= since && typeof counts[i] === "number") { base = counts[i]; break; }
    }
    return last >= base ? last - base : last;
  }

  function ms(v) {
    return typeof v === "number" ? (v < 10 ? v.toFixed(1) : v.toFixed(0)) : "–";
  }

  function renderRoutes(data) {
    const hist = data.history || {};
    const rows = (data.routes || []).map((r) => {
      const src = r.sources || {};
      const read = r.kind === "read";
      const perMin = read ? perMinute(hist.t, (hist.timeouts || {})[r.name]) : "";
      const tr = row([
        [r.name], [r.kind], [r.requests, "num"],
        [read ? src.projection : "", "num"], [read ? src.cache : "", "num"],
        [read ? src.primary : "", "num"], [read ? src.stale : "", "num"],
        [read ? ms(r.wait_p50_ms) : "", "num"], [read ? ms(r.wait_p99_ms) : "", "num"],
        [read ? r.max_wait_ms : "", "num"], [perMin, "num"], [read ? r.timeouts : "", "num"],
        [r.client_errors, "num"], [r.server_errors, "num"],
      ]);
      tr.dataset.route = r.name;
      if (read) {
        const over = (v) => typeof v !== "number" || v > r.max_wait_ms;
        if (r.reads_timed && over(r.wait_p50_ms)) tr.children[7].classList.add("over");
        if (r.reads_timed && over(r.wait_p99_ms)) tr.children[8].classList.add("over");
      }
      return tr;
    });
    if (!rows.length) rows.push(row([["no routes configured", "empty"]]));
    $("routes").replaceChildren(...rows);
    $("routes-table").dataset.rect = rect($("routes-table"));
  }

  function renderTimeouts(data) {
    const t = data.timeouts || { total: 0, recent: [] };
    $("timeouts-total").textContent = t.total;
    const rows = (t.recent || []).slice().reverse().map((e) => row([
      [when(e.at_unix_ms)], [e.route], [e.projection], [e.action],
      [Number(e.waited_ms).toFixed(1), "num"],
    ]));
    if (!rows.length) rows.push(row([["none", "empty"]]));
    $("timeouts").replaceChildren(...rows);
  }

  // Draws `series` ({name: [value|null, ...]} aligned with `times`) into `chart`.
  // `left,top,width,height` of an element in page pixels (for tests and screenshots).
  function rect(e) {
    const r = e.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]
      .map(Math.round).join(",");
  }

  // The chart's coordinates are its on-screen pixels (the viewBox follows the
  // element's width), so it spans the page without stretching its text.
  function drawChart(chart, legend, times, series, format, integer) {
    const h = Number(chart.getAttribute("viewBox").split(" ")[3]);
    const w = Math.max(320, Math.round(chart.getBoundingClientRect().width));
    chart.setAttribute("viewBox", "0 0 " + w + " " + h);
    chart.dataset.width = w;
    chart.dataset.rect = rect(chart);
    const m = { l: 44, r: 10, t: 10, b: 20 };
    const end = times.length ? times[times.length - 1] : Date.now();
    const start = end - WINDOW_MS;
    let max = 0;
    for (const values of Object.values(series))
      for (const v of values) if (typeof v === "number" && v > max) max = v;
    // Whole numbers (held reads) get whole-number grid lines.
    max = integer ? Math.max(4, Math.ceil((max * 1.15) / 4) * 4) : max > 0 ? max * 1.15 : 1;
    const x = (t) => m.l + ((t - start) / WINDOW_MS) * (w - m.l - m.r);
    const y = (v) => h - m.b - (v / max) * (h - m.t - m.b);
    const nodes = [];
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      nodes.push(svg("line", { x1: m.l, x2: w - m.r, y1: y(v), y2: y(v), class: "grid" }));
      nodes.push(svg("text", { x: m.l - 4, y: y(v) + 3, "text-anchor": "end" }, format(v)));
    }
    for (let min = 0; min <= 10; min += 2) {
      const label = min === 0 ? "now" : "-" + min + "m";
      nodes.push(svg("text", { x: x(end - min * 60000), y: h - 5, "text-anchor": "middle" }, label));
    }
    let points = 0;
    const names = Object.keys(series).sort();
    const items = [];
    names.forEach((name, n) => {
      const color = COLORS[n % COLORS.length];
      let segment = [];
      const flush = () => {
        if (segment.length === 1) {
          const [cx, cy] = segment[0].split(",");
          nodes.push(svg("circle", { cx, cy, r: 2, fill: color, "data-series": name, "data-points": 1 }));
        } else if (segment.length > 1) {
          nodes.push(svg("polyline", {
            fill: "none", stroke: color, "stroke-width": 1.6, points: segment.join(" "),
            "data-series": name, "data-points": segment.length,
          }));
        }
        segment = [];
      };
      series[name].forEach((v, i) => {
        if (typeof v !== "number" || times[i] < start) return flush();
        segment.push(x(times[i]).toFixed(1) + "," + y(v).toFixed(1));
        points++;
      });
      flush();
      const item = el("span", name);
      item.style.setProperty("--c", color);
      items.push(item);
    });
    chart.replaceChildren(...nodes);
    chart.setAttribute("data-points", points);
    legend.replaceChildren(...items);
  }

  function render(data) {
    renderInstances(data);
    renderRoutes(data);
    renderTimeouts(data);
    document.documentElement.dataset.viewport = window.innerWidth;
    const hist = data.history || { t: [], lag: {}, held: {} };
    drawChart($("lag-chart"), $("lag-legend"), hist.t, hist.lag, (v) => v.toFixed(v < 10 ? 2 : 0), false);
    drawChart($("held-chart"), $("held-legend"), hist.t, hist.held, (v) => v.toFixed(0), true);
    $("updated").textContent = when(data.now_unix_ms);
    $("tz").textContent = TIME_FORMAT.resolvedOptions().timeZone;
    polls++;
    $("polls").textContent = polls;
    $("polls").dataset.polls = polls;
  }

  async function poll() {
    try {
      const resp = await fetch("status", { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
      $("state").textContent = "live";
      $("state").className = "live";
    } catch (e) {
      $("state").textContent = "disconnected, retrying";
      $("state").className = "down";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
