// Sluice's web UI: one page, its views chosen by the URL's fragment (#/runs/12). Everything it
// shows comes from the JSON API (/api/v1) with the session cookie set by /ui/login; live run
// and step changes arrive as server-sent events (/api/v1/stream). No framework: elements are
// built with `h`, never from HTML text, so nothing from the API is ever parsed as markup.
'use strict';

(() => {
  const S = { me: null, cleanup: [], route: '' };
  const main = () => document.getElementById('main');

  // ---- building blocks ------------------------------------------------------------------

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.setAttribute('class', v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
  }

  const may = (p) => !!(S.me && S.me.permissions.includes(p));
  const badge = (state) => h('span', { class: `badge s-${state}` }, String(state).replace('_', ' '));
  const when = (t) => {
    if (t === null || t === undefined || t === '') return '';
    const d = typeof t === 'number' ? new Date(t) : new Date(t);
    return isNaN(d) ? String(t) : d.toLocaleString();
  };
  const took = (ms) => {
    if (ms === null || ms === undefined) return '';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  };
  const link = (href, text) => h('a', { href }, text);
  const runLink = (id) => link(`#/runs/${id}`, `run ${id}`);
  const json = (v) => h('pre', { class: 'json' }, JSON.stringify(v, null, 2));

  function table(headers, rows, opts = {}) {
    return h(
      'table',
      opts.label ? { 'aria-label': opts.label } : {},
      h('thead', {}, h('tr', {}, headers.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.text || c)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, opts.empty || 'nothing yet'))),
    );
  }

  function toast(text, bad) {
    const t = h('div', { class: bad ? 'bad' : '' }, text);
    document.getElementById('toast').append(t);
    setTimeout(() => t.remove(), bad ? 9000 : 4000);
  }

  class ApiFail extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = 'GET', body, raw = false, signal } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && S.me && S.me.csrf) headers['X-CSRF-Token'] = S.me.csrf;
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      signal,
    });
    if (r.status === 401 && path !== '/ui/login') {
      S.me = null;
      showLogin('Your session has ended: log in again.');
      throw new ApiFail('the session has ended', 401);
    }
    if (raw) return r;
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!r.ok) throw new ApiFail(data && data.error ? data.error.message : `${r.status} ${r.statusText}`, r.status);
    return data;
  }

  // An action behind a button: runs it, says what happened, and shows the view again.
  // `again`: whether the view is shown anew after it (not for buttons that only show more).
  function act(label, fn, cls, again = true) {
    const b = h('button', { type: 'button', class: cls || null }, label);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        const said = await fn();
        if (said) toast(said);
        if (again) await show();
      } catch (e) {
        if (e.status !== 401) toast(`${label}: ${e.message}`, true);
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  function onLeave(fn) {
    S.cleanup.push(fn);
  }

  // ---- login -----------------------------------------------------------------------------

  function showLogin(message) {
    document.getElementById('top').hidden = true;
    const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
    const said = h('p', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
    const form = h(
      'form',
      { class: 'login', 'aria-labelledby': 'login-title' },
      h('h1', { id: 'login-title' }, 'Log in to Sluice'),
      h('label', { for: 'token' }, 'Token'),
      input,
      h('p', { id: 'token-help', class: 'muted' }, 'A token from `sluice token create`; the first admin token is in the data folder\u2019s admin.token. It is sent once and kept by the server, not by this page.'),
      said,
      h('button', { type: 'submit', class: 'primary' }, 'Log in'),
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        S.me = await api('/ui/login', { method: 'POST', body: { token: input.value } });
        input.value = '';
        start();
      } catch (e) {
        said.textContent = e.message;
        input.focus();
      }
    });
    main().replaceChildren(form);
    input.focus();
  }

  async function logout() {
    try {
      await api('/ui/logout', { method: 'POST' });
    } catch (_) {
      // Ended already.
    }
    S.me = null;
    leave();
    showLogin('Logged out.');
  }

  // ---- navigation ------------------------------------------------------------------------

  const SECTIONS = [
    ['#/pipelines', 'Pipelines', 'read'],
    ['#/runs', 'Runs', 'read'],
    ['#/compare', 'Compare', 'read'],
    ['#/models', 'Models', 'read'],
    ['#/schedules', 'Schedules', 'read'],
    ['#/events', 'Events', 'read'],
    ['#/audit', 'Audit log', 'audit'],
  ];

  function header() {
    const top = document.getElementById('top');
    top.hidden = false;
    const nav = document.getElementById('nav');
    nav.replaceChildren(...SECTIONS.filter(([, , p]) => may(p)).map(([href, text]) => h('a', { href }, text)));
    document.getElementById('who').textContent = `${S.me.name} (${S.me.role})`;
  }

  function markNav() {
    for (const a of document.querySelectorAll('#nav a')) {
      const here = location.hash.startsWith(a.getAttribute('href'));
      if (here) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  function leave() {
    for (const f of S.cleanup.splice(0)) {
      try {
        f();
      } catch (_) {
        // Already closed.
      }
    }
  }

  const ROUTES = [
    [/^#\/pipelines\/([^/?]+)$/, (m) => pipelinePage(decodeURIComponent(m[1]))],
    [/^#\/pipelines$/, () => pipelinesPage(false)],
    [/^#\/schedules$/, () => pipelinesPage(true)],
    [/^#\/runs\/(\d+)$/, (m) => runPage(Number(m[1]))],
    [/^#\/runs(\?.*)?$/, () => runsPage(query())],
    [/^#\/compare(\?.*)?$/, () => comparePage(query())],
    [/^#\/models\/([^/?]+)$/, (m) => modelPage(decodeURIComponent(m[1]))],
    [/^#\/models$/, () => modelsPage()],
    [/^#\/events$/, () => eventsPage()],
    [/^#\/audit$/, () => auditPage()],
  ];

  function query() {
    const q = location.hash.split('?')[1] || '';
    return new URLSearchParams(q);
  }

  // Shows the view the fragment names (again, after an action).
  async function show() {
    if (!S.me) return;
    const hash = location.hash || '#/pipelines';
    const fresh = hash !== S.route;
    S.route = hash;
    markNav();
    for (const [re, view] of ROUTES) {
      const m = hash.match(re);
      if (!m) continue;
      // The view is built again: its streams are closed and opened anew.
      leave();
      try {
        const el = await view(m);
        if (el && S.route === hash) {
          main().replaceChildren(el);
          if (fresh) main().focus({ preventScroll: true });
        }
      } catch (e) {
        if (e.status !== 401) main().replaceChildren(h('h1', {}, 'Cannot show this'), h('p', { class: 'error', role: 'alert' }, e.message));
      }
      return;
    }
    location.hash = '#/pipelines';
  }

  function start() {
    header();
    S.route = '';
    if (!location.hash || location.hash === '#') location.hash = '#/pipelines';
    else show();
  }

  // ---- pipelines and schedules -------------------------------------------------------------

  function triggers(p) {
    const out = [];
    if (p.schedule) out.push(`cron ${p.schedule.cron}${p.schedule.enabled === false ? ' (off)' : ''}`);
    for (const t of p.on || []) {
      if (t.alert) out.push(`alert ${t.alert.name || ''}`);
      if (t.webhook) out.push(`webhook ${t.webhook.source}`);
      if (t.rollout) out.push(`rollout ${t.rollout.model || ''} ${t.rollout.status || ''}`);
      if (t.drift) out.push(`drift ${t.drift.model || ''}`);
    }
    return out.join(', ') || 'by hand';
  }

  async function pipelinesPage(scheduledOnly) {
    const d = await api('/api/v1/pipelines');
    const list = d.pipelines.filter((p) => !scheduledOnly || p.schedule);
    const rows = list.map((p) =>
      h(
        'tr',
        {},
        h('td', {}, link(`#/pipelines/${encodeURIComponent(p.name)}`, p.name), p.description ? h('div', { class: 'muted' }, p.description) : null),
        h('td', { class: 'num' }, p.steps.length),
        h(
          'td',
          {},
          p.schedule
            ? [h('code', {}, p.schedule.cron), ` ${p.schedule.timezone}`, h('div', { class: 'muted' }, (p.schedule.next_fires || []).map(when).join(' \u00b7 '))]
            : h('span', { class: 'muted' }, 'none'),
        ),
        h('td', {}, triggers(p)),
        h('td', {}, (p.going || []).map((r) => [runLink(r), ' '])),
        h('td', {}, (p.last_runs || []).map((r) => [h('a', { href: `#/runs/${r.id}`, 'aria-label': `run ${r.id} ${r.state}` }, badge(r.state)), ' '])),
      ),
    );
    return h(
      'section',
      {},
      h('h1', {}, scheduledOnly ? 'Schedules' : 'Pipelines'),
      table(['Pipeline', { text: 'Steps', num: true }, 'Schedule and next fire times', 'Triggers', 'Going', 'Last runs'], rows, {
        label: scheduledOnly ? 'Scheduled pipelines' : 'Pipelines',
        empty: scheduledOnly ? 'no pipeline has a schedule' : 'no pipelines in the DAG folder',
      }),
      d.invalid && d.invalid.length
        ? [h('h2', {}, 'Files that do not load'), table(['File', 'Errors'], d.invalid.map((i) => h('tr', {}, h('td', {}, i.file), h('td', { class: 'error' }, (i.errors || []).join('\n')))))]
        : null,
    );
  }

  function paramInput(name, spec) {
    const id = `param-${name}`;
    const help = spec.description ? h('div', { class: 'muted', id: `${id}-help` }, spec.description) : null;
    let input;
    if (spec.type === 'boolean') {
      input = h('input', { type: 'checkbox', id, name, checked: spec.default === true });
    } else if (spec.type === 'list' || spec.type === 'object') {
      input = h('textarea', { id, name, rows: 2, cols: 40 });
      input.value = spec.default === undefined ? '' : JSON.stringify(spec.default);
    } else {
      input = h('input', { type: spec.type === 'string' ? 'text' : 'number', step: spec.type === 'integer' ? '1' : 'any', id, name, required: spec.default === undefined });
      input.value = spec.default === undefined ? '' : String(spec.default);
    }
    if (help) input.setAttribute('aria-describedby', `${id}-help`);
    return { el: h('div', {}, h('label', { for: id }, `${name} (${spec.type})`), input, help), read: () => readParam(spec, input) };
  }

  function readParam(spec, input) {
    if (spec.type === 'boolean') return input.checked;
    if (input.value === '') return undefined;
    if (spec.type === 'list' || spec.type === 'object') return JSON.parse(input.value);
    if (spec.type === 'number' || spec.type === 'integer') return Number(input.value);
    return input.value;
  }

  function triggerForm(p) {
    const fields = Object.entries(p.params || {}).map(([name, spec]) => [name, paramInput(name, spec)]);
    const form = h('form', { 'aria-labelledby': 'trigger-title' }, h('h2', { id: 'trigger-title' }, 'Trigger a run'), fields.map(([, f]) => f.el), h('p', {}, h('button', { type: 'submit', class: 'primary' }, 'Trigger run')));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const params = {};
      try {
        for (const [name, f] of fields) {
          const v = f.read();
          if (v !== undefined) params[name] = v;
        }
        const d = await api(`/api/v1/pipelines/${encodeURIComponent(p.name)}/runs`, { method: 'POST', body: { params } });
        toast(`started run ${d.run.id}`);
        location.hash = `#/runs/${d.run.id}`;
      } catch (e) {
        if (e.status !== 401) toast(`Trigger: ${e.message}`, true);
      }
    });
    return form;
  }

  async function pipelinePage(name) {
    const [p, graph, runs] = await Promise.all([
      api(`/api/v1/pipelines/${encodeURIComponent(name)}`),
      api(`/api/v1/pipelines/${encodeURIComponent(name)}/graph`),
      api(`/api/v1/runs?pipeline=${encodeURIComponent(name)}&limit=20`),
    ]);
    const view = h(
      'section',
      {},
      h('h1', {}, p.name),
      p.description ? h('p', {}, p.description) : null,
      h(
        'div',
        { class: 'cards' },
        h('div', { class: 'card' }, 'Steps', h('b', {}, p.steps.length)),
        h('div', { class: 'card' }, 'Triggers', h('b', {}, triggers(p))),
        p.schedule ? h('div', { class: 'card' }, 'Next fire', h('b', {}, when(p.schedule.next))) : null,
        h('div', { class: 'card' }, 'Version', h('b', {}, h('code', {}, p.version.slice(0, 12)))),
      ),
      h('h2', {}, 'Graph'),
      graphView(graph, () => ({}), null),
      may('run') ? triggerForm(p) : null,
      h('h2', {}, 'Recent runs'),
      runsTable(runs.runs, false),
    );
    return view;
  }

  // ---- the DAG view ----------------------------------------------------------------------

  const COLORS = {
    pending: '#d0d7de', ready: '#afb8c1', running: '#54aeff', retrying: '#54aeff', waiting: '#d4a72c',
    succeeded: '#2da44e', failed: '#cf222e', timed_out: '#cf222e', upstream_failed: '#fa4549',
    skipped: '#8c959f', cancelled: '#6e7781',
  };

  // A canvas drawing of a laid-out DAG (server-side layout), coloured by `states()` (step id to
  // {state, items, done}); wheel to zoom, drag to pan, click (or Enter on a listed step) to pick.
  function graphView(layout, states, onPick) {
    const canvas = h('canvas', { role: 'img', tabindex: '0', 'aria-label': `The pipeline's graph: ${layout.nodes.length} steps, ${layout.edges.length} dependencies. The steps are listed in the table below.` });
    const box = h('div', { class: 'graph' }, canvas);
    const W = layout.node.width;
    const H = layout.node.height;
    let view = null;
    const fit = () => {
      const w = canvas.clientWidth || 800;
      const hgt = canvas.clientHeight || 460;
      const k = Math.min(w / (layout.width + 40), hgt / (layout.height + 40), 1.2);
      view = { k, x: (w - layout.width * k) / 2, y: 20 * k };
    };
    const draw = () => {
      const dpr = window.devicePixelRatio || 1;
      const w = canvas.clientWidth || 800;
      const hgt = canvas.clientHeight || 460;
      if (canvas.width !== Math.round(w * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(hgt * dpr);
      }
      if (!view) fit();
      const g = canvas.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, hgt);
      g.setTransform(dpr * view.k, 0, 0, dpr * view.k, dpr * view.x, dpr * view.y);
      const st = states();
      g.strokeStyle = '#8c959f';
      g.lineWidth = 1 / Math.max(view.k, 0.2);
      g.beginPath();
      for (const [a, b] of layout.edges) {
        const s = layout.nodes[a];
        const t = layout.nodes[b];
        g.moveTo(s.x + W / 2, s.y + H);
        g.lineTo(t.x + W / 2, t.y);
      }
      g.stroke();
      const labels = view.k * 12 >= 6;
      g.font = '12px system-ui, sans-serif';
      g.textBaseline = 'middle';
      // Zoomed far out, a step is still at least 2 pixels each way.
      const minPx = 2 / view.k;
      const bw = Math.max(W, minPx);
      const bh = Math.max(H, minPx);
      for (const n of layout.nodes) {
        const s = st[n.id] || {};
        g.fillStyle = COLORS[s.state] || COLORS.pending;
        g.fillRect(n.x, n.y, bw, bh);
        if (n.map) {
          g.strokeStyle = '#24292f';
          g.strokeRect(n.x + 3, n.y + 3, W, H);
        }
        if (labels) {
          g.fillStyle = '#1f2328';
          const count = n.map && s.items ? ` [${s.done || 0}/${s.items}]` : '';
          g.fillText(`${n.id}${count}`.slice(0, 26), n.x + 6, n.y + H / 2);
        }
      }
    };
    let drag = null;
    canvas.addEventListener('mousedown', (e) => {
      drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false };
    });
    const release = () => {
      drag = null;
    };
    window.addEventListener('mouseup', release);
    onLeave(() => window.removeEventListener('mouseup', release));
    canvas.addEventListener('mousemove', (e) => {
      if (!drag) return;
      view.x = drag.vx + e.clientX - drag.x;
      view.y = drag.vy + e.clientY - drag.y;
      drag.moved = drag.moved || Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3;
      requestAnimationFrame(draw);
    });
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = canvas.getBoundingClientRect();
      const mx = e.clientX - r.left;
      const my = e.clientY - r.top;
      const k2 = Math.min(4, Math.max(0.01, view.k * (e.deltaY < 0 ? 1.2 : 1 / 1.2)));
      view.x = mx - ((mx - view.x) * k2) / view.k;
      view.y = my - ((my - view.y) * k2) / view.k;
      view.k = k2;
      requestAnimationFrame(draw);
    }, { passive: false });
    canvas.addEventListener('click', (e) => {
      if (!onPick) return;
      const r = canvas.getBoundingClientRect();
      const x = (e.clientX - r.left - view.x) / view.k;
      const y = (e.clientY - r.top - view.y) / view.k;
      const n = layout.nodes.find((n) => x >= n.x && x <= n.x + W && y >= n.y && y <= n.y + H);
      if (n) onPick(n.id);
    });
    const zoom = (f) => () => {
      view.k *= f;
      draw();
    };
    box.append(h('div', { class: 'tools' }, h('button', { type: 'button', onclick: zoom(1.25), 'aria-label': 'Zoom in' }, '+'), h('button', { type: 'button', onclick: zoom(0.8), 'aria-label': 'Zoom out' }, '\u2212'), h('button', { type: 'button', onclick: () => { fit(); draw(); } }, 'Fit')));
    // Drawn once it is in the page (it needs its size).
    requestAnimationFrame(() => {
      draw();
      box.dataset.drawn = String(layout.nodes.length);
      performance.mark('graph-drawn');
    });
    box.redraw = draw;
    return box;
  }

  // ---- runs ------------------------------------------------------------------------------

  function runsTable(runs, pick) {
    const rows = runs.map((r) =>
      h(
        'tr',
        {},
        pick ? h('td', {}, h('input', { type: 'checkbox', name: 'compare', value: r.id, 'aria-label': `compare run ${r.id}` })) : null,
        h('td', {}, runLink(r.id)),
        h('td', {}, link(`#/pipelines/${encodeURIComponent(r.pipeline)}`, r.pipeline)),
        h('td', {}, badge(r.state)),
        h('td', {}, r.trigger),
        h('td', {}, when(r.created_at)),
        h('td', { class: 'num' }, r.started_at && r.finished_at ? took(r.finished_at - r.started_at) : ''),
      ),
    );
    const head = ['Run', 'Pipeline', 'State', 'Trigger', 'Created', { text: 'Took', num: true }];
    return table(pick ? ['Compare', ...head] : head, rows, { label: 'Runs', empty: 'no runs' });
  }

  const STATES = ['', 'pending', 'running', 'interrupting', 'interrupted', 'succeeded', 'failed', 'cancelled'];

  async function runsPage(q) {
    const pipelines = (await api('/api/v1/pipelines')).pipelines.map((p) => p.name);
    const pipeline = q.get('pipeline') || '';
    const state = q.get('state') || '';
    const params = new URLSearchParams({ limit: '50' });
    if (pipeline) params.set('pipeline', pipeline);
    if (state) params.set('state', state);
    let page = await api(`/api/v1/runs?${params}`);
    const body = h('div', {}, runsTable(page.runs, true));
    const more = h('button', { type: 'button', hidden: !page.next }, 'More runs');
    let paged = false;
    more.addEventListener('click', async () => {
      paged = true;
      params.set('cursor', page.next);
      page = await api(`/api/v1/runs?${params}`);
      body.querySelector('tbody').append(...runsTable(page.runs, true).querySelectorAll('tbody tr'));
      more.hidden = !page.next;
    });
    const pSel = h('select', { id: 'f-pipeline' }, h('option', { value: '' }, 'all'), pipelines.map((n) => h('option', { value: n, selected: n === pipeline }, n)));
    const sSel = h('select', { id: 'f-state' }, STATES.map((s) => h('option', { value: s, selected: s === state }, s || 'all')));
    const filter = h('form', { class: 'inline', 'aria-label': 'Filter runs' }, h('div', {}, h('label', { for: 'f-pipeline' }, 'Pipeline'), pSel), h('div', {}, h('label', { for: 'f-state' }, 'State'), sSel), h('button', { type: 'submit' }, 'Filter'));
    filter.addEventListener('submit', (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (pSel.value) p.set('pipeline', pSel.value);
      if (sSel.value) p.set('state', sSel.value);
      location.hash = `#/runs?${p}`;
    });
    const compare = h('button', { type: 'button' }, 'Compare selected');
    compare.addEventListener('click', () => {
      const ids = [...body.querySelectorAll('input[name=compare]:checked')].map((c) => c.value);
      if (ids.length < 2) return toast('pick two runs or more to compare', true);
      location.hash = `#/compare?runs=${ids.join(',')}`;
    });
    // New runs and state changes appear without a reload (the first page; ticks are kept).
    const first = params.toString();
    live(null, async () => {
      // Once older pages are shown, the list stays as it is (the newest is a reload away).
      if (paged) return;
      const ticked = new Set([...body.querySelectorAll('input[name=compare]:checked')].map((c) => c.value));
      page = await api(`/api/v1/runs?${first}`);
      body.replaceChildren(runsTable(page.runs, true));
      for (const c of body.querySelectorAll('input[name=compare]')) c.checked = ticked.has(c.value);
      more.hidden = !page.next;
    });
    return h('section', {}, h('h1', {}, 'Runs'), filter, h('div', { class: 'actions' }, compare), body, more);
  }

  // Listens to the engine's changes (of one run, or all); `changed` is called at most every
  // 250 ms. Closed when the view is left.
  function live(run, changed) {
    const es = new EventSource(run ? `/api/v1/stream?run=${run}` : '/api/v1/stream');
    let pending = null;
    const poke = () => {
      if (pending) return;
      pending = setTimeout(() => {
        pending = null;
        changed();
      }, 250);
    };
    // What changed before the stream opened is read once it is open.
    es.addEventListener('open', poke);
    es.addEventListener('run', poke);
    es.addEventListener('step', poke);
    es.addEventListener('lagged', poke);
    onLeave(() => {
      es.close();
      clearTimeout(pending);
    });
  }

  async function runPage(id) {
    const [report, layout] = await Promise.all([api(`/api/v1/runs/${id}`), api(`/api/v1/runs/${id}/graph`)]);
    let r = report;
    let picked = null;
    const stateOf = () => {
      const out = {};
      for (const s of r.steps) {
        const done = (s.tasks || []).filter((t) => ['succeeded', 'failed', 'timed_out', 'cancelled'].includes(t.state)).length;
        out[s.id] = { state: s.state, items: s.items, done };
      }
      return out;
    };
    const head = h('div', {});
    const steps = h('div', {});
    const gantt = h('div', {});
    const detail = h('div', { id: 'step-detail' });
    const graph = graphView(layout, stateOf, (step) => pick(step));
    // A run of many steps lists the first 200 that match what is typed here.
    const find = h('input', { type: 'search', id: 'step-find', 'aria-label': 'Find a step by its id' });
    find.addEventListener('input', () => steps.replaceChildren(stepsTable(r, pick, find.value)));
    const render = () => {
      head.replaceChildren(runHead(r));
      steps.replaceChildren(stepsTable(r, pick, find.value));
      gantt.replaceChildren(ganttChart(r));
      graph.redraw();
    };
    const pick = (step) => {
      picked = step;
      stepDetail(r, step, detail);
    };
    render();
    if (!['succeeded', 'failed', 'cancelled'].includes(r.state)) {
      live(id, async () => {
        r = await api(`/api/v1/runs/${id}`);
        render();
        if (picked) refreshDetail(r, picked, detail);
      });
    }
    const metrics = h('div', {});
    api(`/api/v1/runs/${id}/metrics`).then((m) => metrics.replaceChildren(metricCharts(m.metrics))).catch(() => {});
    return h(
      'section',
      {},
      head,
      h('h2', {}, 'Graph'),
      h('p', { class: 'muted legend' }, Object.entries({ running: 'running', waiting: 'waiting', succeeded: 'succeeded', failed: 'failed', pending: 'pending' }).map(([k, v]) => h('span', {}, badge(k), ' ', v === k ? '' : v))),
      graph,
      h('h2', {}, 'Steps'),
      r.steps.length > SHOWN_STEPS ? h('p', {}, h('label', { for: 'step-find' }, 'Find a step'), find) : null,
      steps,
      detail,
      h('h2', {}, 'Timeline'),
      gantt,
      h('h2', {}, 'Metrics'),
      metrics,
    );
  }

  function runHead(r) {
    const ended = ['succeeded', 'failed', 'cancelled'].includes(r.state);
    const retry = h('select', { id: 'retry-from', 'aria-label': 'Retry from step' }, r.steps.map((s) => h('option', { value: s.id, selected: s.state === 'failed' }, s.id)));
    return h(
      'div',
      {},
      h('h1', {}, `Run ${r.id} `, badge(r.state)),
      h(
        'div',
        { class: 'cards' },
        h('div', { class: 'card' }, 'Pipeline', h('b', {}, link(`#/pipelines/${encodeURIComponent(r.pipeline)}`, r.pipeline))),
        h('div', { class: 'card' }, 'Trigger', h('b', {}, r.trigger)),
        h('div', { class: 'card' }, 'Started', h('b', {}, when(r.started_at || r.created_at))),
        h('div', { class: 'card' }, 'Took', h('b', {}, took(r.duration_ms) || '\u2026')),
      ),
      Object.keys(r.params || {}).length ? table(['Param', 'Value'], Object.entries(r.params).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, h('code', {}, JSON.stringify(v))))), { label: 'Parameters' }) : null,
      h(
        'div',
        { class: 'actions' },
        may('run') && !ended ? act('Cancel run', async () => (await api(`/api/v1/runs/${r.id}/cancel`, { method: 'POST' }), 'cancel requested'), 'danger') : null,
        may('run') && ended
          ? [
              retry,
              act('Retry from step', async () => {
                const d = await api(`/api/v1/runs/${r.id}/retry`, { method: 'POST', body: { from: retry.value } });
                location.hash = `#/runs/${d.run.id}`;
                return `started run ${d.run.id}`;
              }),
            ]
          : null,
      ),
    );
  }

  const SHOWN_STEPS = 200;

  function stepsTable(r, pick, filter) {
    const matching = filter ? r.steps.filter((s) => s.id.includes(filter)) : r.steps;
    const shown = matching.slice(0, SHOWN_STEPS);
    const rows = shown.map((s) => {
      const waiting = s.state === 'waiting' && s.kind === 'approval';
      const counts = s.items > 1 ? `${(s.tasks || []).filter((t) => t.state === 'succeeded').length}/${s.items} items` : '';
      return h(
        'tr',
        { 'data-step': s.id },
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => pick(s.id), 'aria-label': `show step ${s.id}` }, s.id)),
        h('td', {}, s.kind),
        h('td', {}, badge(s.state), counts ? h('span', { class: 'muted' }, ` ${counts}`) : null),
        h('td', { class: 'num' }, s.attempts.length),
        h('td', { class: 'num' }, took(s.duration_ms)),
        h('td', {}, s.message ? h('span', { class: s.state === 'failed' ? 'error' : 'muted' }, s.message) : null),
        h(
          'td',
          {},
          waiting && may('approve')
            ? [
                act('Approve', async () => (await api(`/api/v1/runs/${r.id}/steps/${encodeURIComponent(s.id)}/approve`, { method: 'POST', body: { comment: 'approved in the web UI' } }), `approved ${s.id}`), 'primary'),
                ' ',
                act('Reject', async () => (await api(`/api/v1/runs/${r.id}/steps/${encodeURIComponent(s.id)}/reject`, { method: 'POST', body: { comment: 'rejected in the web UI' } }), `rejected ${s.id}`), 'danger'),
              ]
            : null,
        ),
      );
    });
    const t = table(['Step', 'Kind', 'State', { text: 'Attempts', num: true }, { text: 'Took', num: true }, 'Message', ''], rows, { label: 'Steps' });
    if (shown.length === r.steps.length) return t;
    return h('div', {}, h('p', { class: 'muted' }, `${shown.length} of ${matching.length} matching steps (${r.steps.length} in all); the graph shows every one`), t);
  }

  // The step's panel: its log (tailed while the run goes), outputs, artifacts and lineage.
  function stepDetail(r, step, into) {
    for (const f of into.cleanupLog || []) f();
    into.cleanupLog = [];
    const s = r.steps.find((x) => x.id === step);
    const log = h('pre', { class: 'log', id: 'step-log', 'aria-label': `log of step ${step}`, tabindex: '0' });
    const outputs = h('div', { id: 'step-outputs' });
    const lineage = h('div', {});
    into.replaceChildren(h('h2', {}, `Step ${step}`), h('div', { class: 'cols' }, h('div', {}, h('h3', {}, 'Log'), log), h('div', {}, h('h3', {}, 'Outputs'), outputs, h('h3', {}, 'Artifacts and lineage'), lineage)));
    outputs.replaceChildren(json(s ? s.outputs : null));
    const ended = ['succeeded', 'failed', 'cancelled'].includes(r.state);
    const ctrl = new AbortController();
    into.cleanupLog.push(() => ctrl.abort());
    onLeave(() => ctrl.abort());
    (async () => {
      try {
        const resp = await api(`/api/v1/runs/${r.id}/steps/${encodeURIComponent(step)}/logs${ended ? '' : '?follow=true'}`, { raw: true, signal: ctrl.signal });
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          log.append(dec.decode(value, { stream: true }));
          log.scrollTop = log.scrollHeight;
        }
      } catch (e) {
        if (e.name !== 'AbortError' && e.status !== 401) log.append(`\n(the log cannot be read: ${e.message})`);
      }
    })();
    api(`/api/v1/artifacts?run=${r.id}&step=${encodeURIComponent(step)}`)
      .then((d) => lineage.replaceChildren(artifactsView(d.artifacts || [])))
      .catch((e) => lineage.replaceChildren(h('p', { class: 'muted' }, e.message)));
    into.scrollIntoView({ block: 'nearest' });
  }

  function refreshDetail(r, step, into) {
    const s = r.steps.find((x) => x.id === step);
    const out = into.querySelector('#step-outputs');
    if (out && s) out.replaceChildren(json(s.outputs));
  }

  // What a step produced; each artifact's lineage (what made it, what used it) on demand.
  function artifactsView(list) {
    if (!list.length) return h('p', { class: 'muted' }, 'no artifacts');
    const graph = h('div', {});
    const rows = list.map((a) =>
      h(
        'tr',
        {},
        h('td', {}, a.name || a.path || ''),
        h('td', {}, h('code', {}, String(a.digest || '').slice(0, 19))),
        h('td', { class: 'num' }, a.size === undefined ? '' : `${a.size} B`),
        h('td', {}, act(`Lineage of ${a.name || 'artifact'}`, async () => { graph.replaceChildren(lineageView(await api(`/api/v1/lineage/${encodeURIComponent(a.digest)}`))); }, null, false)),
      ),
    );
    return h('div', {}, table(['Artifact', 'Digest', { text: 'Size', num: true }, ''], rows, { label: 'Artifacts' }), graph);
  }

  // An artifact's lineage: the nodes upstream and downstream of it, as a list by depth.
  function lineageView(l) {
    const nodes = l.nodes || [];
    if (!nodes.length) return json(l);
    return table(['Node', 'Kind', 'Detail'], nodes.map((n) => h('tr', {}, h('td', {}, n.id || n.digest || ''), h('td', {}, n.kind || n.type || ''), h('td', {}, h('code', {}, JSON.stringify(n).slice(0, 160))))), { label: 'Lineage' });
  }

  // Attempts on a time axis: one bar per attempt, coloured by how it ended.
  function ganttChart(r) {
    const bars = [];
    for (const s of r.steps) for (const a of s.attempts) bars.push({ step: s.id, a });
    if (!bars.length) return h('p', { class: 'muted' }, 'no attempts yet');
    const now = Date.now();
    const t0 = Math.min(...bars.map((b) => b.a.started_at));
    const t1 = Math.max(...bars.map((b) => b.a.finished_at || now), t0 + 1);
    const rowH = 18;
    const left = 160;
    const width = 900;
    const shown = bars.slice(0, 400);
    const scale = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - 10);
    const g = svg('svg', { viewBox: `0 0 ${width} ${shown.length * rowH + 24}`, width: '100%', role: 'img', 'aria-label': `Timeline of ${bars.length} attempts over ${took(t1 - t0)}` });
    shown.forEach((b, i) => {
      const y = i * rowH;
      const x0 = scale(b.a.started_at);
      const x1 = Math.max(scale(b.a.finished_at || now), x0 + 2);
      const color = { succeeded: '#2da44e', cached: '#8250df', failed: '#cf222e', timed_out: '#cf222e', cancelled: '#6e7781', running: '#54aeff', interrupted: '#9a6700' }[b.a.outcome] || '#8c959f';
      g.append(
        svg('text', { x: 4, y: y + 13 }, `${b.step}${b.a.item ? `[${b.a.item}]` : ''} #${b.a.attempt}`),
        svg('rect', { x: x0, y: y + 3, width: x1 - x0, height: rowH - 6, fill: color }, svg('title', {}, `${b.step} attempt ${b.a.attempt}: ${b.a.outcome}, ${took(b.a.duration_ms)}`)),
      );
    });
    g.append(svg('text', { x: left, y: shown.length * rowH + 16 }, '0'), svg('text', { x: width - 60, y: shown.length * rowH + 16 }, took(t1 - t0)));
    return h('div', {}, g, bars.length > shown.length ? h('p', { class: 'muted' }, `the first ${shown.length} of ${bars.length} attempts`) : null);
  }

  // A line chart per metric key (and step), from the points the run's steps logged.
  function metricCharts(points) {
    if (!points || !points.length) return h('p', { class: 'muted' }, 'no metrics logged');
    const series = new Map();
    for (const p of points) {
      const k = `${p.task}: ${p.key}`;
      if (!series.has(k)) series.set(k, []);
      series.get(k).push([p.step, p.value]);
    }
    return h('div', { class: 'cards' }, [...series.entries()].slice(0, 24).map(([k, pts]) => h('div', { class: 'card' }, k, lineChart(pts, k))));
  }

  function lineChart(pts, label) {
    const w = 260;
    const hgt = 120;
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
    const [y0, y1] = [Math.min(...ys), Math.max(...ys, Math.min(...ys) + 1e-9)];
    const X = (x) => 30 + ((x - x0) / (x1 - x0)) * (w - 40);
    const Y = (y) => hgt - 16 - ((y - y0) / (y1 - y0)) * (hgt - 26);
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
    return svg(
      'svg',
      { viewBox: `0 0 ${w} ${hgt}`, width: w, height: hgt, role: 'img', 'aria-label': `${label}: ${pts.length} points from ${y0.toPrecision(3)} to ${y1.toPrecision(3)}` },
      svg('path', { d, fill: 'none', stroke: '#0969da', 'stroke-width': 1.5 }),
      svg('text', { x: 0, y: 10 }, y1.toPrecision(3)),
      svg('text', { x: 0, y: hgt - 16 }, y0.toPrecision(3)),
      svg('text', { x: w - 40, y: hgt - 2 }, `step ${x1}`),
    );
  }

  // ---- compare ---------------------------------------------------------------------------

  async function comparePage(q) {
    const ids = (q.get('runs') || '').split(',').filter(Boolean);
    if (ids.length < 2) {
      return h('section', {}, h('h1', {}, 'Compare runs'), h('p', {}, 'Pick two runs or more on the ', link('#/runs', 'runs page'), ' and press \u201cCompare selected\u201d.'));
    }
    const d = await api(`/api/v1/compare?runs=${ids.join(',')}`);
    const cols = d.runs.map((r) => h('span', {}, runLink(r.id), ' ', badge(r.state)));
    const params = table(['Param', ...cols], d.params.map((p) => h('tr', { class: p.differs ? 'differs' : null }, h('td', {}, p.key, p.differs ? h('span', { class: 'muted' }, ' (differs)') : null), p.values.map((v) => h('td', {}, v === null ? '\u2014' : v)))), { label: 'Parameters side by side' });
    const metrics = table(['Metric', ...cols], d.metrics.map((m) => h('tr', {}, h('td', {}, m.key, h('span', { class: 'muted' }, ` (${m.direction})`)), m.values.map((v, i) => h('td', { class: i === m.best ? 'num best' : 'num' }, v === null ? '\u2014' : Number(v).toPrecision(4))))), { label: 'Metrics side by side' });
    const charts = h('div', { class: 'cards' }, d.metrics.filter((m) => !m.key.includes('.')).slice(0, 12).map((m) => h('div', { class: 'card' }, m.key, barChart(d.runs.map((r) => `run ${r.id}`), m.values, m.best))));
    return h('section', {}, h('h1', {}, 'Compare runs'), h('h2', {}, 'Params'), h('p', { class: 'muted' }, 'Rows that differ are marked.'), params, h('h2', {}, 'Metrics'), metrics, charts, h('h2', {}, 'Step durations'), table(['Step', ...cols], d.steps.map((s) => h('tr', {}, h('td', {}, s.step), s.duration_ms.map((v) => h('td', { class: 'num' }, took(v))))), { label: 'Step durations' }));
  }

  function barChart(names, values, best) {
    const w = 260;
    const rowH = 22;
    const max = Math.max(...values.filter((v) => v !== null).map(Math.abs), 1e-12);
    const g = svg('svg', { viewBox: `0 0 ${w} ${names.length * rowH}`, width: w, role: 'img', 'aria-label': names.map((n, i) => `${n}: ${values[i]}`).join(', ') });
    names.forEach((n, i) => {
      const v = values[i];
      g.append(svg('text', { x: 0, y: i * rowH + 15 }, n));
      if (v !== null) g.append(svg('rect', { x: 60, y: i * rowH + 4, width: (Math.abs(v) / max) * (w - 130), height: rowH - 8, fill: i === best ? '#2da44e' : '#0969da' }), svg('text', { x: 64 + (Math.abs(v) / max) * (w - 130), y: i * rowH + 15 }, Number(v).toPrecision(3)));
    });
    return g;
  }

  // ---- models ----------------------------------------------------------------------------

  async function modelsPage() {
    const d = await api('/api/v1/models');
    const rows = d.models.map((m) => h('tr', {}, h('td', {}, link(`#/models/${encodeURIComponent(m.name)}`, m.name)), h('td', { class: 'num' }, m.versions), h('td', {}, Object.entries(m.aliases || {}).map(([a, v]) => h('span', { class: 'badge s-succeeded' }, `${a} \u2192 ${v}`))), h('td', {}, when(m.updated))));
    return h('section', {}, h('h1', {}, 'Models'), table(['Model', { text: 'Versions', num: true }, 'Aliases', 'Updated'], rows, { label: 'Models', empty: 'no models registered' }));
  }

  async function modelPage(name) {
    const enc = encodeURIComponent(name);
    const [m, history, rollouts] = await Promise.all([api(`/api/v1/models/${enc}`), api(`/api/v1/models/${enc}/history`), api('/api/v1/rollouts')]);
    const aliases = Object.entries(m.aliases || {});
    const aliasRows = aliases.map(([a, v]) =>
      h(
        'tr',
        { 'data-alias': a },
        h('td', {}, a, (m.model.protected || []).includes(a) ? h('span', { class: 'muted' }, ' (protected)') : null),
        h('td', { class: 'num' }, v),
        h('td', {}, may('edit') ? act(`Roll back ${a}`, async () => {
          const d = await api(`/api/v1/models/${enc}/aliases/${encodeURIComponent(a)}/rollback`, { method: 'POST', body: { reason: 'rolled back in the web UI' } });
          return `${a} now points at ${d.move.to === null ? 'nothing' : `version ${d.move.to}`}`;
        }, 'danger') : null),
      ),
    );
    const moves = history.moves.map((mv) => h('tr', {}, h('td', {}, when(mv.at)), h('td', {}, mv.alias), h('td', {}, mv.from === null ? '\u2014' : mv.from, ' \u2192 ', mv.to === null ? '\u2014' : mv.to, mv.rollback ? ' (rollback)' : ''), h('td', {}, mv.actor), h('td', {}, mv.reason || '')));
    const gate = h('div', { id: 'gate-report' });
    const versionRows = m.versions.slice().reverse().map((v) =>
      h(
        'tr',
        {},
        h('td', { class: 'num' }, v.version),
        h('td', {}, (v.aliases || []).join(', ')),
        h('td', {}, Object.entries(v.metrics || {}).map(([k, x]) => `${k}=${Number(x).toPrecision(4)}`).join('  ')),
        h('td', {}, v.attempt ? runLink(v.attempt.run) : v.source),
        h('td', {}, when(v.created)),
        h('td', {}, v.attempt ? act('Gate report', async () => { gate.replaceChildren(await gateReport(v)); }, null, false) : null),
      ),
    );
    const mine = rollouts.rollouts.filter((r) => r.model === name);
    const rolloutRows = mine.map((r) =>
      h(
        'tr',
        {},
        h('td', {}, r.id),
        h('td', {}, r.alias),
        h('td', {}, `${r.stable === null ? '\u2014' : r.stable} \u2192 ${r.candidate}`),
        h('td', {}, badge(r.status)),
        h('td', { class: 'num' }, `${r.share}%`),
        h('td', {}, (r.measurements || []).slice(-3).map((x) => h('div', {}, `${x.verdict}: `, x.values.map(([k, val]) => `${k}=${val === null ? 'n/a' : Number(val).toPrecision(3)}`).join(', ')))),
        h('td', {}, may('approve') && !['succeeded', 'aborted'].includes(r.status) ? act('Abort (roll back)', async () => (await api(`/api/v1/rollouts/${r.id}/abort`, { method: 'POST', body: { reason: 'aborted in the web UI' } }), `rollout ${r.id} aborted`), 'danger') : null),
      ),
    );
    return h(
      'section',
      {},
      h('h1', {}, `Model ${name}`),
      m.model.description ? h('p', {}, m.model.description) : null,
      h('h2', {}, 'Aliases'),
      table(['Alias', { text: 'Version', num: true }, ''], aliasRows, { label: 'Aliases', empty: 'no aliases yet' }),
      h('h2', {}, 'Rollouts'),
      table(['Rollout', 'Alias', 'Versions', 'Status', { text: 'Candidate weight', num: true }, 'Latest analyses', ''], rolloutRows, { label: 'Rollouts', empty: 'no rollouts of this model' }),
      h('h2', {}, 'Versions'),
      table([{ text: 'Version', num: true }, 'Aliases', 'Metrics', 'From', 'Registered', ''], versionRows, { label: 'Versions' }),
      gate,
      h('h2', {}, 'Alias history'),
      table(['When', 'Alias', 'Move', 'By', 'Why'], moves, { label: 'Alias history', empty: 'no alias has moved' }),
    );
  }

  // The gates of the run that registered a version: each `gate:` step's report.
  async function gateReport(v) {
    const r = await api(`/api/v1/runs/${v.attempt.run}`);
    const gates = r.steps.filter((s) => s.kind === 'gate');
    if (!gates.length) return h('p', { class: 'muted' }, `run ${r.id} has no gate step`);
    return h('div', {}, h('h2', {}, `Gate report of version ${v.version} (run ${r.id})`), gates.map((g) => h('div', {}, h('h3', {}, g.id, ' ', badge(g.state)), json(g.outputs))));
  }

  // ---- events and audit ------------------------------------------------------------------

  async function eventsPage() {
    const d = await api('/api/v1/events?limit=100');
    const rows = d.events.map((e) => h('tr', {}, h('td', { class: 'num' }, e.id), h('td', {}, when(e.received_at)), h('td', {}, e.source), h('td', {}, badge(e.status === 'matched' ? 'succeeded' : e.status === 'rejected' ? 'failed' : 'pending'), ' ', e.status), h('td', {}, e.reason), h('td', {}, (e.runs || []).map((r) => [runLink(r), ' ']))));
    return h('section', {}, h('h1', {}, 'Events'), h('p', { class: 'muted' }, `${d.total} received in all; the newest 100:`), table([{ text: 'Event', num: true }, 'Received', 'Source', 'Status', 'Why', 'Runs'], rows, { label: 'Events', empty: 'no events received' }));
  }

  async function auditPage() {
    const d = await api('/api/v1/audit?limit=200');
    const rows = d.entries.slice().reverse().map((e) => h('tr', {}, h('td', { class: 'num' }, e.seq), h('td', {}, when(e.at)), h('td', {}, e.actor), h('td', {}, e.action), h('td', {}, e.target)));
    const verify = h('div', {});
    return h('section', {}, h('h1', {}, 'Audit log'), h('div', { class: 'actions' }, act('Verify the chain', async () => { const v = await api('/api/v1/audit/verify'); verify.replaceChildren(json(v.verdict)); }, null, false)), verify, table([{ text: 'Seq', num: true }, 'When', 'Who', 'What', 'On'], rows, { label: 'Audit log' }));
  }

  // ---- start -----------------------------------------------------------------------------

  window.addEventListener('hashchange', () => show());
  window.addEventListener('DOMContentLoaded', async () => {
    document.getElementById('logout').addEventListener('click', logout);
    // The skip link moves the focus; it must not change the fragment the views are named by.
    document.querySelector('a.skip').addEventListener('click', (e) => {
      e.preventDefault();
      main().focus();
    });
    try {
      const me = await api('/ui/session');
      if (me && me.name) {
        S.me = me;
        start();
        return;
      }
    } catch (_) {
      // Shown below.
    }
    showLogin('');
  });
})();
