// Postern admin dashboard: one page over the admin API (/api/v1), hash
// routes, no framework and no build step. Every value that comes from the
// API reaches the DOM through textContent or setAttribute, never innerHTML:
// hostnames, paths and user names are attacker-influenced.

const POLL_MS = 1000;
const LIVE_MAX_ROWS = 1000;
const SVG = 'http://www.w3.org/2000/svg';

const state = {
  role: null,          // "admin" | "read"
  csrf: null,          // kept in memory only; GET /api/v1/session gives it back after a reload
  hidden: new Set(),   // pages whose endpoint answered 404 (an operator has no users, say)
  current: null,       // the page on screen
  timer: null,
  polling: false,
  round: 0,            // see startPolling
  wanted: null,        // the route to return to after login
};

class Unauthorized extends Error {}
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- DOM helpers ----------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

function table(columns, rows, attrs = {}) {
  const head = h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.cls }, c.title))));
  const body = h('tbody', {}, rows);
  return h('div', { class: 'table-wrap' }, h('table', attrs, head, body));
}

function empty(colspan, text) {
  return h('tr', { class: 'empty' }, h('td', { colspan }, text));
}

function badge(text, kind = '') {
  return h('span', { class: `badge ${kind}`.trim() }, text);
}

function dash(v) {
  return v === null || v === undefined || v === '' ? '—' : v;
}

// --- formatting -----------------------------------------------------------------

function pad(n, w = 2) {
  return String(n).padStart(w, '0');
}

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? '—');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function ago(iso) {
  if (!iso) return '';
  const ms = Date.now() - new Date(iso).getTime();
  if (Number.isNaN(ms)) return '';
  const sec = Math.max(0, Math.round(ms / 1000));
  if (sec < 60) return `${sec} s ago`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ago`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min ago`;
  return `${Math.floor(sec / 86400)} d ago`;
}

// Relative times are refreshed on every poll (refreshAgo), not only when
// the data changes, so "5 s ago" never goes stale on a quiet page.
function agoSpan(iso) {
  return h('span', { class: 'muted', 'data-ago': iso ?? '' }, ago(iso));
}

function refreshAgo(root) {
  for (const el of root.querySelectorAll('[data-ago]')) el.textContent = ago(el.dataset.ago);
}

function timeCell(iso) {
  return h('time', { datetime: iso ?? '', title: iso ?? '' }, fmtTime(iso));
}

function bytes(n) {
  if (typeof n !== 'number') return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function num(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '—';
}

function statusClass(code) {
  if (typeof code !== 'number') return 'st-none';
  return `st-${Math.floor(code / 100)}xx`;
}

// --- the API --------------------------------------------------------------------

async function api(path, { method = 'GET', body, quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new HttpError(0, 'the admin API does not answer');
  }
  if (res.status === 401) {
    if (!quiet401) onUnauthorized();
    throw new Unauthorized('unauthorized');
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) throw new HttpError(res.status, (data && data.error) || text.trim() || res.statusText);
  return { data, text };
}

function onUnauthorized() {
  const route = parseHash();
  if (route.page !== 'login') state.wanted = location.hash;
  endSession();
  showLogin();
}

function endSession() {
  state.role = null;
  state.csrf = null;
  state.hidden.clear();
  stopPolling();
  armed.clear();
  // Nothing rendered for one session (an admin's buttons, say) outlives it.
  for (const page of Object.values(PAGES)) {
    page.leave?.();
    page.lastText = null;
    if (page.reset) page.reset();
    else page.body?.replaceChildren();
  }
}

// --- routing --------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [page, query = ''] = raw.split('?');
  return { page: page || 'overview', params: new URLSearchParams(query) };
}

function go(page, params) {
  const q = params && params.toString();
  const hash = `#/${page}${q ? `?${q}` : ''}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  if (!state.role) {
    showLogin();
    return;
  }
  let { page, params } = parseHash();
  if (page === 'login') page = 'overview';
  if (!PAGES[page] || state.hidden.has(page)) {
    go('overview');
    return;
  }
  showPage(page, params);
}

function showLogin() {
  $('page-login').hidden = false;
  $('pages').hidden = true;
  $('nav').hidden = true;
  $('nav-toggle').hidden = true;
  $('session').hidden = true;
  $('updated').textContent = '';
  document.title = 'Sign in · Postern admin';
  document.body.dataset.page = 'login';
  if (location.hash !== '#/login') history.replaceState(null, '', '#/login');
  setTimeout(() => $('login-token').focus(), 0);
  // Offered only when the admin port has a sign-on provider configured.
  fetch('/ui/sso', { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json() : { enabled: false }))
    .then((v) => { $('login-sso').hidden = !v.enabled; })
    .catch(() => { $('login-sso').hidden = true; });
}

function showPage(id, params) {
  const page = PAGES[id];
  $('page-login').hidden = true;
  $('pages').hidden = false;
  $('nav').hidden = false;
  $('nav-toggle').hidden = false;
  $('session').hidden = false;
  closeNav();
  for (const a of $('nav').querySelectorAll('a')) {
    const p = a.dataset.page;
    a.hidden = state.hidden.has(p);
    if (p === id) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (state.current && state.current !== page) {
    state.current.leave?.();
    state.current.section.hidden = true;
  }
  if (!page.section) mountPage(id, page);
  page.section.hidden = false;
  page.section.dataset.loaded = 'false';
  state.current = page;
  document.title = `${page.title} · Postern admin`;
  document.body.dataset.page = id;
  page.enter?.(params);
  startPolling();
}

function mountPage(id, page) {
  page.id = id;
  page.heading = h('h1', {}, page.title);
  page.tools = h('div', { class: 'page-tools' });
  page.body = h('div', { class: 'page-body', id: `${id}-body`, 'data-test': `${id}-body` });
  page.error = h('p', { class: 'error', id: `${id}-error`, 'data-test': `${id}-error`, role: 'alert', hidden: true });
  page.section = h('section', { id: `page-${id}`, class: 'page', 'data-test': `page-${id}` },
    h('div', { class: 'page-head' }, page.heading, page.tools), page.error, page.body);
  $('pages').append(page.section);
  page.mount?.();
}

// --- polling --------------------------------------------------------------------

// Each start of polling (a page shown, filters changed) is a new round; a
// round that is still waiting on the network when the next one starts
// neither renders its stale answer nor schedules another tick.
function startPolling() {
  stopPolling();
  state.polling = true;
  tick(state.round);
}

function stopPolling() {
  state.round += 1;
  state.polling = false;
  clearTimeout(state.timer);
  state.timer = null;
}

async function tick(round) {
  const page = state.current;
  if (round !== state.round || !page) return;
  const started = performance.now();
  if (!page.paused?.()) await load(page, round);
  if (round !== state.round || state.current !== page) return;
  const wait = Math.max(50, POLL_MS - (performance.now() - started));
  state.timer = setTimeout(() => tick(round), wait);
}

async function load(page, round) {
  const path = page.path ? page.path() : page.endpoint;
  try {
    const { data, text } = await api(path);
    if (state.current !== page || round !== state.round) return;
    banner(null);
    showError(page, null);
    $('updated').textContent = `Updated ${fmtClock(new Date().toISOString()).slice(0, 8)}`;
    // The same answer as a second ago: leave the DOM (selection, scroll, open rows) alone.
    if (text !== page.lastText) {
      page.lastText = text;
      page.update(data ?? {});
    }
    refreshAgo(page.body);
    // For tests and for anyone reading the DOM: what the page shows now.
    page.section.dataset.path = path;
    page.section.dataset.loaded = 'true';
  } catch (e) {
    if (e instanceof Unauthorized || round !== state.round) return;
    page.section.dataset.path = path;
    page.section.dataset.loaded = 'error';
    if (e.status === 404 && page.id !== 'overview') {
      state.hidden.add(page.id);
      go('overview');
      return;
    }
    if (e.status === 0) banner(`${e.message}; retrying every second`);
    else showError(page, `${e.status}: ${e.message}`);
  }
}

function banner(text) {
  const el = $('banner');
  el.hidden = !text;
  el.textContent = text || '';
}

function showError(page, text) {
  page.error.hidden = !text;
  page.error.textContent = text || '';
}

let toastTimer = null;
function toast(text, kind = '') {
  const el = $('toast');
  el.textContent = text;
  el.className = `toast ${kind}`.trim();
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

// --- actions (admin only) -------------------------------------------------------

// A destructive button asks once more in place instead of a modal dialog:
// the first click arms it for a few seconds, the second one acts.
const armed = new Map();
const ARM_MS = 4000;

function actionButton(key, label, testId, attrs, act) {
  if (state.role !== 'admin') return null;
  const isArmed = (armed.get(key) ?? 0) > Date.now();
  const button = h('button', {
    type: 'button',
    class: isArmed ? 'danger armed' : 'danger',
    'data-test': testId,
    'data-armed': isArmed ? 'true' : 'false',
    ...attrs,
  }, isArmed ? 'Confirm' : label);
  button.addEventListener('click', async () => {
    if ((armed.get(key) ?? 0) <= Date.now()) {
      armed.set(key, Date.now() + ARM_MS);
      button.textContent = 'Confirm';
      button.classList.add('armed');
      button.dataset.armed = 'true';
      setTimeout(() => {
        if ((armed.get(key) ?? 0) <= Date.now() && button.isConnected) {
          button.textContent = label;
          button.classList.remove('armed');
          button.dataset.armed = 'false';
        }
      }, ARM_MS + 50);
      return;
    }
    armed.delete(key);
    button.disabled = true;
    try {
      await act();
    } catch (e) {
      if (!(e instanceof Unauthorized)) toast(`Failed: ${e.message}`, 'bad');
    } finally {
      button.disabled = false;
      button.textContent = label;
      button.dataset.armed = 'false';
      if (state.current) state.current.lastText = null;
    }
  });
  return button;
}

// --- pages ----------------------------------------------------------------------

const PAGES = {
  overview: {
    title: 'Overview',
    endpoint: '/api/v1/overview',
    update: renderOverview,
  },
  sites: {
    title: 'Sites',
    endpoint: '/api/v1/sites',
    probe: '/api/v1/sites',
    mount() {
      this.filter = h('input', {
        type: 'search', id: 'sites-filter', 'data-test': 'sites-filter', placeholder: 'Filter by host, id or backend',
        'aria-label': 'Filter sites',
      });
      this.filter.addEventListener('input', () => this.data && renderSites.call(this, this.data));
      this.tools.append(this.filter);
    },
    update(data) {
      this.data = data;
      renderSites.call(this, data);
    },
  },
  users: {
    title: 'Users',
    endpoint: '/api/v1/users',
    probe: '/api/v1/users',
    update: renderUsers,
  },
  tunnels: {
    title: 'Tunnels',
    endpoint: '/api/v1/tunnels',
    probe: '/api/v1/tunnels',
    update: renderTunnels,
  },
  certificates: {
    title: 'Certificates',
    endpoint: '/api/v1/certificates',
    probe: '/api/v1/certificates',
    update: renderCertificates,
  },
  requests: null, // below
  dataplanes: {
    title: 'Data planes',
    endpoint: '/api/v1/dataplanes',
    probe: '/api/v1/dataplanes',
    update: renderDataPlanes,
  },
};

// Overview ----------------------------------------------------------------------

function renderOverview(o) {
  const body = this.body;
  const snap = o.snapshot ?? {};
  const counts = o.counts ?? {};
  $('brand-sub').textContent = [o.component, o.version && `v${o.version}`].filter(Boolean).join(' ');

  const facts = h('dl', { class: 'facts', id: 'overview-facts', 'data-test': 'overview-facts' },
    fact('Component', o.component, 'component'),
    fact('Version', o.version, 'version'),
    fact('Started', o.startedAt ? [fmtTime(o.startedAt), ' ', agoSpan(o.startedAt)] : null, 'started'),
    fact('Snapshot', snap.version ?? 'none applied yet', 'snapshot-version'),
    fact('Applied', snap.appliedAt ? [fmtTime(snap.appliedAt), ' ', agoSpan(snap.appliedAt)] : null, 'snapshot-applied'),
    fact('Source', snap.source, 'snapshot-source'));

  const tiles = h('div', { class: 'tiles', id: 'overview-counts', 'data-test': 'overview-counts' },
    ['sites', 'routes', 'users', 'tunnels', 'certificates'].map((k) => {
      const target = k === 'routes' ? 'sites' : k;
      const inner = [h('span', { class: 'tile-n', 'data-test': `count-${k}` }, num(counts[k])), h('span', { class: 'tile-label' }, k)];
      return state.hidden.has(target)
        ? h('div', { class: 'tile' }, inner)
        : h('a', { class: 'tile', href: `#/${target}` }, inner);
    }));

  const parts = [h('div', { class: 'grid-2' },
    h('div', { class: 'card' }, h('h2', {}, 'This process'), facts),
    h('div', { class: 'card' }, h('h2', {}, 'Configuration'), tiles))];

  const perMinute = o.requests?.perMinute ?? [];
  parts.push(h('div', { class: 'card' }, h('h2', {}, 'Requests and errors per minute, last hour'),
    perMinute.length || o.component !== 'operator' ? errorsChart(perMinute)
      : h('p', { class: 'muted' }, 'The operator serves no traffic: each data plane shows its own.')));

  if (o.lastRefused) {
    const r = o.lastRefused;
    parts.push(h('div', { class: 'card alert', id: 'last-refused', 'data-test': 'last-refused' },
      h('h2', {}, 'Last refused snapshot'),
      h('p', { class: 'muted' }, r.version ? ['Version ', h('code', {}, r.version), ' '] : null,
        r.file ? ['File ', h('code', {}, r.file)] : null,
        '. The last good snapshot stays in service.'),
      h('pre', { class: 'message' }, dash(r.message))));
  }
  const rejected = o.rejected ?? [];
  if (rejected.length) {
    parts.push(h('div', { class: 'card alert' }, h('h2', {}, `Rejected objects (${rejected.length})`),
      table([{ title: 'Kind' }, { title: 'Object' }, { title: 'Reason' }, { title: 'Message' }],
        rejected.map((r) => h('tr', { 'data-test': 'rejected-row' },
          h('td', {}, dash(r.kind)), h('td', { class: 'mono' }, [r.namespace, r.name].filter(Boolean).join('/')),
          h('td', {}, badge(dash(r.reason), 'bad')), h('td', { class: 'wrap' }, dash(r.message)))),
        { id: 'rejected-table', 'data-test': 'rejected-table' })));
  }
  const planes = o.dataPlanes ?? [];
  if (o.component === 'operator' || planes.length) {
    parts.push(h('div', { class: 'card' }, h('h2', {}, `Data planes (${planes.length})`), dataPlaneTable(planes, snap.version)));
  }
  body.replaceChildren(...parts);
}

function fact(label, value, test) {
  return [h('dt', {}, label), h('dd', { 'data-test': `fact-${test}`, class: 'mono' }, dash(value))];
}

function errorsChart(perMinute) {
  const W = 600;
  const H = 120;
  const n = Math.max(perMinute.length, 1);
  const slot = W / 60;
  const max = Math.max(1, ...perMinute.map((m) => m.total ?? 0));
  const total = perMinute.reduce((a, m) => a + (m.total ?? 0), 0);
  const errors = perMinute.reduce((a, m) => a + (m.errors ?? 0), 0);
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H + 1}`, class: 'chart', id: 'errors-chart', 'data-test': 'errors-chart',
    role: 'img', 'aria-label': `${total} requests, ${errors} errors in the last hour`, preserveAspectRatio: 'none',
  });
  svg.append(s('line', { x1: 0, y1: H + 0.5, x2: W, y2: H + 0.5, class: 'axis' }));
  // The newest minute sits at the right edge, as on every other time chart.
  const offset = 60 - Math.min(n, 60);
  perMinute.slice(-60).forEach((m, i) => {
    const x = (offset + i) * slot + 1;
    const w = Math.max(1, slot - 2);
    const t = m.total ?? 0;
    const e = m.errors ?? 0;
    const ht = (t / max) * (H - 4);
    const he = (e / max) * (H - 4);
    const g = s('g', { 'data-test': 'chart-bar', 'data-total': t, 'data-errors': e },
      s('title', {}, `${fmtTime(m.minute).slice(11, 16)}: ${t} requests, ${e} errors`),
      s('rect', { x, y: 0, width: w, height: H, class: 'hit' }),
      s('rect', { x, y: H - ht, width: w, height: ht, class: 'bar-total' }),
      s('rect', { x, y: H - he, width: w, height: he, class: 'bar-errors' }));
    svg.append(g);
  });
  const rate = total ? ((errors / total) * 100).toFixed(errors / total < 0.1 ? 2 : 1) : '0';
  return h('div', { class: 'chart-box' },
    h('p', { class: 'chart-legend' },
      h('span', { class: 'key key-total' }), `${num(total)} requests `,
      h('span', { class: 'key key-errors' }), `${num(errors)} errors (${rate} %)`,
      h('span', { class: 'muted' }, ` · peak ${num(max)}/min`)),
    svg,
    h('div', { class: 'chart-axis muted' }, h('span', {}, '60 min ago'), h('span', {}, 'now')));
}

// Sites -------------------------------------------------------------------------

function renderSites(data) {
  const q = (this.filter?.value ?? '').trim().toLowerCase();
  const items = data.items ?? [];
  const shown = items.filter((site) => !q || [site.id, site.backend, ...(site.hostnames ?? [])]
    .some((v) => String(v ?? '').toLowerCase().includes(q)));
  if (!items.length) {
    this.body.replaceChildren(h('p', { class: 'card muted', 'data-test': 'sites-empty' }, 'No sites. Add a ProxyTarget.'));
    return;
  }
  this.body.replaceChildren(
    h('p', { class: 'muted count-line' }, `${shown.length} of ${items.length} sites`),
    ...shown.map(siteCard));
}

function siteCard(site) {
  const routes = site.routes ?? [];
  const cols = [{ title: '#', cls: 'num' }, { title: 'Route' }, { title: 'Path' }, { title: 'Methods' },
    { title: 'Priority', cls: 'num' }, { title: 'Backend' }, { title: 'Auth' }];
  const rows = routes.length ? routes.map((r) => h('tr', { 'data-test': 'route-row', 'data-route-id': r.id ?? '' },
    h('td', { class: 'num' }, dash(r.order)),
    h('td', { class: 'mono' }, dash(r.id)),
    h('td', { class: 'mono' }, badge(r.path?.kind ?? 'prefix', 'soft'), ' ', dash(r.path?.value)),
    h('td', {}, (r.methods ?? []).length ? r.methods.join(', ') : 'any'),
    h('td', { class: 'num' }, dash(r.priority)),
    h('td', { class: 'mono' }, dash(r.backend)),
    h('td', {}, dash(r.auth)))) : [empty(cols.length, 'No routes: every path goes to the site backend.')];
  return h('article', { class: 'card site', 'data-test': 'site', 'data-site-id': site.id ?? '' },
    h('header', { class: 'site-head' },
      h('h2', { class: 'site-hosts', 'data-test': 'site-hosts' }, (site.hostnames ?? []).join(', ') || '(no hostname)'),
      h('span', { class: 'site-badges' },
        site.tls ? badge('TLS', 'good') : badge('HTTP only', 'soft'),
        badge(`auth: ${dash(site.auth)}`, site.auth && site.auth !== 'none' ? 'info' : 'soft'))),
    h('dl', { class: 'facts inline' },
      h('dt', {}, 'Id'), h('dd', { class: 'mono' }, dash(site.id)),
      h('dt', {}, 'Backend'), h('dd', { class: 'mono' }, dash(site.backend))),
    h('details', { class: 'routes', open: routes.length > 0 },
      h('summary', {}, `Routes in match order (${routes.length})`),
      table(cols, rows, { class: 'routes-table' })));
}

// Users -------------------------------------------------------------------------

function renderUsers(data) {
  const items = [...(data.items ?? [])].sort((a, b) => (b.connections ?? 0) - (a.connections ?? 0)
    || String(a.name).localeCompare(String(b.name)));
  const cols = [{ title: 'User' }, { title: 'Resource' }, { title: 'Upstream' }, { title: 'Live', cls: 'num' },
    { title: 'Up', cls: 'num' }, { title: 'Down', cls: 'num' }];
  if (state.role === 'admin') cols.push({ title: '' });
  const rows = items.length ? items.map((u) => h('tr', { 'data-test': 'user-row', 'data-user': u.name ?? '' },
    h('td', { class: 'strong' }, dash(u.name)),
    h('td', { class: 'mono muted' }, dash(u.id)),
    h('td', { class: 'mono' }, dash(u.upstream)),
    h('td', { class: 'num', 'data-test': 'user-connections' }, u.connections ? badge(num(u.connections), 'good') : '0'),
    h('td', { class: 'num' }, bytes(u.bytesUp)),
    h('td', { class: 'num' }, bytes(u.bytesDown)),
    state.role === 'admin' ? h('td', { class: 'actions' }, actionButton(`user:${u.name}`, 'Disconnect', 'disconnect-user',
      { 'data-user': u.name ?? '' }, async () => {
        const { data: r } = await api(`/api/v1/users/${encodeURIComponent(u.name)}/disconnect`, { method: 'POST' });
        toast(`Cut ${r?.cut ?? 0} connection(s) of ${u.name}`);
      })) : null)) : [empty(cols.length, 'No forward-proxy users.')];
  this.body.replaceChildren(table(cols, rows, { id: 'users-table', 'data-test': 'users-table' }));
}

// Tunnels -----------------------------------------------------------------------

function renderTunnels(data) {
  const items = data.items ?? [];
  if (!items.length) {
    this.body.replaceChildren(h('p', { class: 'card muted', 'data-test': 'tunnels-empty' }, 'No tunnels.'));
    return;
  }
  this.body.replaceChildren(...items.map((t) => {
    const agents = t.agents ?? [];
    const where = t.mode === 'tcp' ? `port ${dash(t.tcpPort)}` : [...(t.hostnames ?? []), t.pathPrefix].filter(Boolean).join(', ');
    const [ns, name] = String(t.id ?? '').split('/');
    const cols = [{ title: 'Session' }, { title: 'Remote' }, { title: 'Agent' }, { title: 'Connected' }, { title: 'State' }];
    const rows = agents.length ? agents.map((a) => h('tr', { 'data-test': 'agent-row' },
      h('td', { class: 'mono' }, dash(a.session)), h('td', { class: 'mono' }, dash(a.remote)),
      h('td', {}, dash(a.agentVersion)), h('td', {}, timeCell(a.connectedAt), ' ', agoSpan(a.connectedAt)),
      h('td', {}, a.active ? badge('active', 'good') : badge('standby', 'soft')))) : [empty(cols.length, 'No agent connected.')];
    return h('article', { class: 'card', 'data-test': 'tunnel', 'data-tunnel-id': t.id ?? '' },
      h('header', { class: 'site-head' },
        h('h2', {}, dash(t.id)),
        h('span', { class: 'site-badges' }, badge(dash(t.mode), 'info'),
          agents.some((a) => a.active) ? badge('online', 'good') : badge('offline', 'bad'),
          name ? actionButton(`tunnel:${t.id}`, 'Disconnect', 'disconnect-tunnel', { 'data-tunnel': t.id }, async () => {
            const { data: r } = await api(`/api/v1/tunnels/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/disconnect`, { method: 'POST' });
            toast(`Disconnected ${r?.disconnected ?? 0} agent(s) of ${t.id}`);
          }) : null)),
      h('p', { class: 'mono muted' }, where || '—'),
      table(cols, rows));
  }));
}

// Certificates ------------------------------------------------------------------

function expiryClass(days) {
  if (typeof days !== 'number') return '';
  if (days < 7) return 'expiry-red';
  if (days < 21) return 'expiry-amber';
  return 'expiry-ok';
}

function renderCertificates(data) {
  // Soonest expiry first: that is what anyone opening this page wants to know.
  const items = [...(data.items ?? [])].sort((a, b) => (a.daysLeft ?? 1e9) - (b.daysLeft ?? 1e9));
  const cols = [{ title: 'Hostnames' }, { title: 'Expires' }, { title: 'Days left', cls: 'num' }, { title: 'Source' },
    { title: 'Issuer' }, { title: 'Subject' }, { title: 'Valid from' }];
  const rows = items.length ? items.map((c) => h('tr', {
    class: expiryClass(c.daysLeft), 'data-test': 'cert-row', 'data-expiry': expiryClass(c.daysLeft).replace('expiry-', ''),
  },
  h('td', { class: 'mono strong' }, (c.hostnames ?? []).join(', ')),
  h('td', {}, timeCell(c.notAfter)),
  h('td', { class: 'num days', 'data-test': 'cert-days' }, dash(c.daysLeft)),
  h('td', {}, badge(dash(c.source), 'soft')),
  h('td', { class: 'mono' }, dash(c.issuer)),
  h('td', { class: 'mono' }, dash(c.subject)),
  h('td', {}, timeCell(c.notBefore)))) : [empty(cols.length, 'No certificates: no site has TLS.')];
  this.body.replaceChildren(
    h('p', { class: 'muted legend' }, h('span', { class: 'key expiry-red' }), 'under 7 days ',
      h('span', { class: 'key expiry-amber' }), 'under 21 days'),
    table(cols, rows, { id: 'certs-table', 'data-test': 'certs-table' }));
}

// Data planes (operator) ---------------------------------------------------------

function dataPlaneTable(items, current) {
  const cols = [{ title: 'Data plane' }, { title: 'Address' }, { title: 'Acked snapshot' }, { title: 'State' }];
  const rows = items.length ? items.map((d) => {
    // The contract says `version`; the operator also answers `ackedVersion`.
    const acked = d.version ?? d.ackedVersion ?? null;
    return h('tr', { 'data-test': 'dataplane-row' },
      h('td', { class: 'mono strong' }, dash(d.id)),
      h('td', { class: 'mono' }, dash(d.addr)),
      h('td', { class: 'mono' }, dash(acked), current && acked && acked !== current ? [' ', badge('behind', 'warn')] : null),
      h('td', {}, d.connected === false ? badge('gone', 'bad') : badge('connected', 'good'),
        d.nack ? [' ', badge(`refused ${d.nack.version ?? ''}: ${d.nack.reason ?? ''}`, 'bad')] : null));
  }) : [empty(cols.length, 'No data plane connected.')];
  return table(cols, rows, { 'data-test': 'dataplanes-table' });
}

function renderDataPlanes(data) {
  this.body.replaceChildren(h('div', { class: 'card' }, dataPlaneTable(data.items ?? [], null)));
}

// Request log -------------------------------------------------------------------

const FILTERS = [
  ['host', 'Host', 'api.example.com'],
  ['ip', 'Client IP', '203.0.113.7'],
  ['user', 'User', 'alice'],
  ['status', 'Status', '404 or 5xx'],
  ['since', 'Since', '15m, 1h or RFC 3339'],
];

PAGES.requests = {
  title: 'Requests',
  probe: '/api/v1/requests?limit=1',
  live: false,
  source: null,
  seen: new Set(),
  expanded: new Set(),
  mount() {
    this.inputs = {};
    const fields = FILTERS.map(([key, label, hint]) => {
      const input = h('input', { id: `filter-${key}`, name: key, 'data-test': `filter-${key}`, placeholder: hint, spellcheck: 'false', autocomplete: 'off' });
      this.inputs[key] = input;
      return h('label', { class: 'field' }, h('span', {}, label), input);
    });
    this.limit = h('select', { id: 'filter-limit', name: 'limit', 'data-test': 'filter-limit' },
      ['100', '500', '1000'].map((v) => h('option', { value: v }, v)));
    this.liveButton = h('button', { type: 'button', id: 'live-toggle', 'data-test': 'live-toggle', class: 'live', 'aria-pressed': 'false' },
      h('span', { class: 'dot' }), 'Live');
    this.liveState = h('span', { id: 'live-state', 'data-test': 'live-state', class: 'muted', 'data-state': 'off' }, '');
    this.form = h('form', { id: 'requests-filter', 'data-test': 'requests-filter', class: 'filters card' },
      fields, h('label', { class: 'field narrow' }, h('span', {}, 'Rows'), this.limit),
      h('div', { class: 'filter-buttons' },
        h('button', { type: 'submit', class: 'primary', id: 'filter-apply', 'data-test': 'filter-apply' }, 'Apply'),
        h('button', { type: 'button', class: 'ghost', id: 'filter-clear', 'data-test': 'filter-clear' }, 'Clear'),
        this.liveButton, this.liveState));
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      go('requests', this.formParams());
    });
    this.form.querySelector('#filter-clear').addEventListener('click', () => {
      const p = new URLSearchParams();
      if (this.live) p.set('live', '1');
      go('requests', p);
    });
    this.liveButton.addEventListener('click', () => {
      const p = this.formParams();
      if (this.live) p.delete('live');
      else p.set('live', '1');
      go('requests', p);
    });
    this.count = h('p', { class: 'muted count-line', id: 'requests-count', 'data-test': 'requests-count' });
    this.tbody = h('tbody', { id: 'requests-rows', 'data-test': 'requests-rows' });
    const cols = ['Time', 'Status', 'Method', 'Host', 'Path', 'Duration', 'Client', 'User', 'In', 'Out', 'Site / route', 'Upstream', 'Outcome'];
    const numeric = new Set(['Duration', 'In', 'Out']);
    this.tools.append(this.count);
    this.section.insertBefore(this.form, this.error);
    this.body.append(h('div', { class: 'table-wrap' }, h('table', { id: 'requests-table', 'data-test': 'requests-table', class: 'log' },
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: numeric.has(c) ? 'num' : null }, c)))),
      this.tbody)));
    this.tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-request-id]');
      if (!tr) return;
      const id = tr.dataset.requestId;
      if (this.expanded.has(id)) this.expanded.delete(id);
      else this.expanded.add(id);
      toggleDetail(tr, this.expanded.has(id));
    });
  },
  formParams() {
    const p = new URLSearchParams();
    for (const [key] of FILTERS) {
      const v = this.inputs[key].value.trim();
      if (v) p.set(key, v);
    }
    if (this.limit.value !== '100') p.set('limit', this.limit.value);
    if (this.live) p.set('live', '1');
    return p;
  },
  enter(params) {
    // The URL is the source of truth: a reload or a shared link shows the same view.
    for (const [key] of FILTERS) this.inputs[key].value = params.get(key) ?? '';
    this.limit.value = ['100', '500', '1000'].includes(params.get('limit')) ? params.get('limit') : '100';
    this.query = new URLSearchParams();
    for (const [key] of FILTERS) if (params.get(key)) this.query.set(key, params.get(key));
    this.query.set('limit', this.limit.value);
    const live = params.get('live') === '1';
    this.stopLive();
    this.lastText = null;
    this.live = live;
    this.liveButton.setAttribute('aria-pressed', String(live));
    this.liveButton.classList.toggle('on', live);
    this.setLiveState(live ? 'connecting' : 'off');
  },
  path() {
    return `/api/v1/requests?${this.query}`;
  },
  // While live, the stream adds rows; polling would only fight it.
  paused() {
    return this.live && this.source !== null;
  },
  update(data) {
    const items = data.items ?? [];
    this.seen = new Set(items.map((r) => r.requestId));
    this.tbody.replaceChildren(...(items.length ? items.map((r) => this.row(r, 'poll'))
      : [empty(13, 'No requests match.')]));
    this.countRows();
    if (this.live && !this.source) this.startLive();
  },
  row(r, source) {
    const tr = h('tr', {
      'data-test': 'request-row', 'data-request-id': r.requestId ?? '', 'data-source': source,
      'data-status': r.status ?? '', 'data-host': r.host ?? '', class: source === 'live' ? 'fresh' : null, tabindex: 0,
    },
    h('td', { class: 'mono nowrap' }, h('time', { datetime: r.time ?? '', title: r.time ?? '' }, fmtClock(r.time))),
    h('td', { 'data-col': 'status' }, h('span', { class: `status ${statusClass(r.status)}` }, dash(r.status))),
    h('td', { 'data-col': 'method', class: 'mono' }, dash(r.method ?? r.kind)),
    h('td', { 'data-col': 'host', class: 'mono' }, dash(r.host)),
    h('td', { 'data-col': 'path', class: 'mono path', title: r.path ?? '' }, dash(r.path)),
    h('td', { class: 'num' }, typeof r.durationMs === 'number' ? `${r.durationMs} ms` : '—'),
    h('td', { 'data-col': 'client', class: 'mono' }, dash(r.client)),
    h('td', { 'data-col': 'user' }, dash(r.user)),
    h('td', { class: 'num' }, bytes(r.bytesIn)),
    h('td', { class: 'num' }, bytes(r.bytesOut)),
    h('td', { class: 'mono' }, [r.site, r.route].filter(Boolean).join(' › ') || '—'),
    h('td', { class: 'mono' }, dash(r.upstream)),
    h('td', {}, r.outcome && r.outcome !== 'ok' ? badge(r.outcome, 'bad') : dash(r.outcome)));
    tr.record = r;
    if (this.expanded.has(r.requestId)) queueMicrotask(() => toggleDetail(tr, true));
    return tr;
  },
  countRows() {
    const n = this.tbody.querySelectorAll('tr[data-request-id]').length;
    this.count.textContent = `${n} row${n === 1 ? '' : 's'}, newest first`;
  },
  setLiveState(s) {
    this.liveState.dataset.state = s;
    this.liveState.textContent = { off: '', connecting: 'connecting…', open: 'live', reconnecting: 'reconnecting…' }[s] ?? s;
  },
  startLive() {
    const q = new URLSearchParams(this.query);
    q.delete('since');
    q.delete('limit');
    const source = new EventSource(`/api/v1/requests/stream?${q}`);
    this.source = source;
    source.addEventListener('open', () => this.setLiveState('open'));
    source.addEventListener('request', (ev) => {
      let r;
      try {
        r = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (this.seen.has(r.requestId)) return;
      this.seen.add(r.requestId);
      this.tbody.querySelector('tr.empty')?.remove();
      this.tbody.prepend(this.row(r, 'live'));
      const rows = this.tbody.querySelectorAll('tr[data-request-id]');
      for (let i = Math.max(LIVE_MAX_ROWS, Number(this.limit.value)); i < rows.length; i += 1) rows[i].remove();
      this.countRows();
    });
    source.addEventListener('error', async () => {
      if (this.source !== source) return;
      this.setLiveState('reconnecting');
      // EventSource hides the status; a 401 shows up on a plain call.
      try {
        await api('/api/v1/session');
      } catch {
        return;
      }
      if (source.readyState === EventSource.CLOSED && this.source === source) {
        this.source = null; // the next tick reloads the table and opens a new stream
        this.lastText = null;
      }
    });
  },
  reset() {
    this.tbody?.replaceChildren();
    this.seen.clear();
    this.expanded.clear();
  },
  stopLive() {
    if (this.source) this.source.close();
    this.source = null;
  },
  leave() {
    this.stopLive();
    this.live = false;
  },
};

function toggleDetail(tr, open) {
  const next = tr.nextElementSibling;
  if (next && next.classList.contains('detail')) next.remove();
  tr.classList.toggle('open', open);
  if (!open || !tr.record) return;
  const dl = h('dl', { class: 'facts detail-facts' },
    Object.entries(tr.record).map(([k, v]) => [h('dt', {}, k), h('dd', { class: 'mono' }, v === null ? 'null' : String(v))]));
  tr.after(h('tr', { class: 'detail', 'data-test': 'request-detail' }, h('td', { colspan: 13 }, dl)));
}

// --- session --------------------------------------------------------------------

async function login(token) {
  const res = await fetch('/ui/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ token }),
    credentials: 'same-origin',
  });
  if (res.status === 401) throw new Error('That token is not valid.');
  if (!res.ok) throw new Error(`Sign-in failed (${res.status}).`);
  return res.json();
}

async function startSession(role, csrf) {
  state.role = role;
  state.csrf = csrf ?? null;
  $('role').textContent = role === 'admin' ? 'admin' : 'read-only';
  $('role').className = `badge ${role === 'admin' ? 'info' : 'soft'}`;
  $('role').dataset.role = role;
  await probePages();
  const target = state.wanted && !state.wanted.startsWith('#/login') ? state.wanted : '#/overview';
  state.wanted = null;
  if (location.hash === target) route();
  else location.hash = target;
}

// Hides what this component does not serve (an operator has no users,
// tunnels, certificates or request log; a data plane has no data-plane list).
async function probePages() {
  api('/api/v1/overview', { quiet401: true }).then(({ data }) => {
    $('brand-sub').textContent = [data?.component, data?.version && `v${data.version}`].filter(Boolean).join(' ');
  }).catch(() => {});
  await Promise.all(Object.entries(PAGES).filter(([, p]) => p.probe).map(async ([id, p]) => {
    try {
      await api(p.probe, { quiet401: true });
    } catch (e) {
      if (e.status === 404) state.hidden.add(id);
    }
  }));
}

async function logout() {
  try {
    await fetch('/ui/logout', {
      method: 'POST', headers: { 'X-CSRF-Token': state.csrf ?? '' }, credentials: 'same-origin',
    });
  } catch {
    // Signed out locally either way; the session expires on the server.
  }
  endSession();
  state.wanted = null;
  $('login-token').value = '';
  showLogin();
}

function closeNav() {
  $('topbar').classList.remove('nav-open');
  $('nav-toggle').setAttribute('aria-expanded', 'false');
}

function wire() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = $('login-error');
    const button = $('login-submit');
    err.hidden = true;
    button.disabled = true;
    try {
      const r = await login($('login-token').value.trim());
      $('login-token').value = '';
      await startSession(r.role, r.csrf);
    } catch (e) {
      err.textContent = e.message || 'Sign-in failed.';
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  $('logout').addEventListener('click', logout);
  $('toast').addEventListener('click', () => { $('toast').hidden = true; });
  $('nav-toggle').addEventListener('click', () => {
    const open = !$('topbar').classList.contains('nav-open');
    $('topbar').classList.toggle('nav-open', open);
    $('nav-toggle').setAttribute('aria-expanded', String(open));
  });
  window.addEventListener('hashchange', () => {
    if (state.role) route();
    else if (parseHash().page !== 'login') {
      state.wanted = location.hash;
      showLogin();
    }
  });
}

async function boot() {
  wire();
  try {
    const { data } = await api('/api/v1/session', { quiet401: true });
    if (data?.role) {
      state.wanted = location.hash;
      await startSession(data.role, data.csrf);
      return;
    }
  } catch (e) {
    if (!(e instanceof Unauthorized) && e.status !== 401) banner(e.message);
  }
  if (parseHash().page !== 'login') state.wanted = location.hash;
  showLogin();
}

boot();
