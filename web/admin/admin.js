// The operator page: reads /admin/api/stats once a second with the admin key and draws every
// node's figures as line charts on plain canvases (no library, nothing loaded from elsewhere).
//
// The key comes from the form (kept in sessionStorage for this tab only) or from the URL
// fragment `#key=KEY` (never sent to the server in a URL; removed from the address bar at once).

const INTERVAL_MS = 1000;
const WINDOW_MS = 120_000; // two minutes of history per chart
const COLORS = ['#2f6fed', '#e0561b', '#1e9e5a', '#9c3fd6', '#c98a00', '#16a2b8', '#d6336c', '#5c677d'];
const KEY_ITEM = 'switchboard-admin-key';

const $ = (id) => document.getElementById(id);

/** Per node: [{t, snapshot}] oldest first, within WINDOW_MS. */
const timeline = new Map();
/** Node name → color, in order of first sight. */
const colors = new Map();

let key = takeKeyFromFragment() || sessionStorage.getItem(KEY_ITEM);
let timer = null;

function takeKeyFromFragment() {
  const m = /^#key=(.+)$/.exec(location.hash);
  if (!m) return null;
  window.history.replaceState(null, '', location.pathname + location.search);
  const found = decodeURIComponent(m[1]);
  sessionStorage.setItem(KEY_ITEM, found);
  return found;
}

function setStatus(text, kind) {
  const status = $('status');
  status.textContent = text;
  status.className = `status ${kind}`;
}

function askForKey(message) {
  $('key-error').textContent = message || '';
  $('key-form').hidden = false;
  $('key').focus();
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  key = $('key').value.trim();
  sessionStorage.setItem(KEY_ITEM, key);
  $('key-form').hidden = true;
  schedule(0);
});

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(poll, delay);
}

async function poll() {
  if (!key) {
    setStatus('key needed', 'error');
    askForKey();
    return;
  }
  let response;
  try {
    response = await fetch('/admin/api/stats', {
      headers: { Authorization: `Bearer ${key}` },
      cache: 'no-store',
    });
  } catch (err) {
    setStatus(`unreachable: ${err.message}`, 'error');
    schedule(INTERVAL_MS);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_ITEM);
    key = null;
    setStatus('wrong key', 'error');
    askForKey('That key was refused (401).');
    return;
  }
  if (!response.ok) {
    setStatus(`HTTP ${response.status}`, 'error');
    schedule(INTERVAL_MS);
    return;
  }
  const view = await response.json();
  record(view);
  render(view);
  const note = view.cluster_error ? ` (cluster: ${view.cluster_error})` : '';
  setStatus(`live ${new Date().toLocaleTimeString()}${note}`, view.cluster_error ? 'error' : 'live');
  schedule(view.interval_ms || INTERVAL_MS);
}

function record(view) {
  for (const snapshot of view.nodes) {
    if (!colors.has(snapshot.node)) colors.set(snapshot.node, COLORS[colors.size % COLORS.length]);
    const points = timeline.get(snapshot.node) || [];
    const last = points[points.length - 1];
    if (!last || last.t !== snapshot.time_ms) points.push({ t: snapshot.time_ms, snapshot });
    while (points.length && points[0].t < snapshot.time_ms - WINDOW_MS) points.shift();
    timeline.set(snapshot.node, points);
  }
  // Nodes that stopped reporting leave the charts once their history is out of the window.
  const newest = Math.max(...view.nodes.map((s) => s.time_ms), 0);
  for (const [node, points] of timeline) {
    if (!points.length || points[points.length - 1].t < newest - WINDOW_MS) timeline.delete(node);
  }
}

const metric = (name) => (s) => (s.metrics ? s.metrics[name] : null);

/** Each chart: canvas id, and its series (value of a snapshot, dashed or not). */
const CHARTS = [
  { id: 'chart-connections', series: [{ value: (s) => s.connections }] },
  {
    id: 'chart-messages-in',
    // Counted publishes when the node has metrics; else messages sequenced in its rooms.
    series: [{ value: (s) => (s.metrics ? s.metrics.published_per_s : s.room_messages_per_s) }],
  },
  { id: 'chart-deliveries', series: [{ value: metric('deliveries_per_s') }] },
  {
    id: 'chart-latency',
    series: [{ value: metric('latency_p50_ms') }, { value: metric('latency_p99_ms'), dashed: true }],
  },
  { id: 'chart-slow', series: [{ value: metric('slow_consumer_cuts_per_s') }] },
  {
    id: 'chart-bytes',
    series: [{ value: metric('bytes_in_per_s') }, { value: metric('bytes_out_per_s'), dashed: true }],
  },
];

function render(view) {
  const withMetrics = view.nodes.some((s) => s.metrics);
  $('source-in').textContent = withMetrics ? 'published' : 'sequenced in rooms (no metrics)';
  const now = Math.max(...view.nodes.map((s) => s.time_ms), Date.now());
  for (const chart of CHARTS) drawChart($(chart.id), chart.series, now);
  $('nodes-summary').textContent = `${view.nodes.length} node${view.nodes.length === 1 ? '' : 's'}, answered by ${view.node}`;
  renderNodes(view.nodes);
  renderRooms('busiest', view.nodes, 'busiest_rooms', (a, b) => b.messages_per_s - a.messages_per_s || b.members - a.members);
  renderRooms('largest', view.nodes, 'largest_rooms', (a, b) => b.members - a.members);
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function formatNumber(value) {
  if (value === null || value === undefined) return '–';
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(1)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(abs >= 100 ? 0 : abs >= 10 ? 1 : 2);
}

function drawChart(canvas, series, now) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 44;
  const right = 8;
  const top = 8;
  const bottom = 18;
  const plotW = width - left - right;
  const plotH = height - top - bottom;

  let max = 0;
  let any = false;
  const last = {};
  for (const [node, points] of timeline) {
    for (const { snapshot } of points) {
      for (const s of series) {
        const v = s.value(snapshot);
        if (typeof v === 'number') {
          any = true;
          if (v > max) max = v;
        }
      }
    }
    const newest = points[points.length - 1];
    if (newest) last[node] = series.map((s) => s.value(newest.snapshot));
  }
  max = niceMax(max);
  canvas.dataset.last = JSON.stringify(last);

  // Grid and axis labels.
  ctx.strokeStyle = '#dde1e6';
  ctx.fillStyle = '#6b7385';
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    ctx.fillText(formatNumber((max * i) / 4), left - 4, y);
  }
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  ctx.fillText(`-${WINDOW_MS / 1000}s`, left, top + plotH + 3);
  ctx.textAlign = 'right';
  ctx.fillText('now', left + plotW, top + plotH + 3);

  if (!any) {
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('no data: needs the /metrics counters', left + plotW / 2, top + plotH / 2);
    canvas.dataset.points = '0';
    return;
  }

  const x = (t) => left + plotW - ((now - t) / WINDOW_MS) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;
  let drawn = 0;
  for (const [node, points] of timeline) {
    ctx.strokeStyle = colors.get(node) || COLORS[0];
    ctx.lineWidth = 2;
    for (const s of series) {
      ctx.setLineDash(s.dashed ? [5, 4] : []);
      ctx.beginPath();
      let open = false;
      for (const { t, snapshot } of points) {
        const v = s.value(snapshot);
        if (typeof v !== 'number') {
          open = false;
          continue;
        }
        if (open) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        open = true;
        drawn++;
      }
      ctx.stroke();
    }
  }
  ctx.setLineDash([]);
  canvas.dataset.points = String(drawn);
}

function cell(row, text, color) {
  const td = document.createElement('td');
  if (color) {
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = color;
    td.append(swatch);
  }
  td.append(document.createTextNode(text));
  row.append(td);
}

function formatUptime(seconds) {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function renderNodes(nodes) {
  const body = document.querySelector('#nodes tbody');
  const rows = nodes.map((s) => {
    const row = document.createElement('tr');
    const m = s.metrics;
    cell(row, s.node, colors.get(s.node));
    cell(row, s.broker);
    cell(row, formatUptime(s.uptime_s));
    cell(row, formatNumber(s.connections));
    cell(row, formatNumber(s.rooms));
    cell(row, formatNumber(s.room_members));
    cell(row, formatNumber(m ? m.published_per_s : s.room_messages_per_s));
    cell(row, formatNumber(m ? m.deliveries_per_s : null));
    cell(row, formatNumber(m ? m.latency_p50_ms : null));
    cell(row, formatNumber(m ? m.latency_p99_ms : null));
    cell(row, formatNumber(m ? m.slow_consumer_cuts_total : null));
    return row;
  });
  body.replaceChildren(...rows);
}

function renderRooms(tableId, nodes, field, order) {
  const rows = [];
  for (const s of nodes) for (const room of s[field] || []) rows.push({ ...room, node: s.node });
  rows.sort(order);
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(
    ...rows.slice(0, 15).map((room) => {
      const row = document.createElement('tr');
      cell(row, room.room);
      cell(row, room.node, colors.get(room.node));
      cell(row, formatNumber(room.members));
      cell(row, formatNumber(room.messages_per_s));
      cell(row, formatNumber(room.seq));
      return row;
    }),
  );
}

schedule(0);
