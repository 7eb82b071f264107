// tenantry console: a small app on the public API (/api/v1), with the permissions of the
// signed-in person and nothing more. Its session is an HttpOnly cookie the server holds; this
// script never sees a token. It reads the session's CSRF token from /console/session and sends
// it with every request that changes something.
//
// Every piece of data is put on the page as text (textContent / text nodes, through `h`), never
// as HTML, so names, YAML and audit details cannot inject markup. Links are built from ids the
// API returned, URL-encoded.
'use strict';

const session = { csrf: null, tokenSignIn: false, me: null, admin: false, builtin: null, orgs: [] };
const orgCache = new Map(); // org id -> { org, permissions:Set }
const main = document.getElementById('main');

// ---------- DOM ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function render(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter(Boolean));
}

function link(path, text, attrs) {
  return h('a', { href: '#' + path, ...attrs }, text);
}

const enc = encodeURIComponent;

function when(value) {
  if (!value) return '—';
  const d = new Date(value);
  return isNaN(d) ? String(value) : d.toLocaleString();
}

function money(minor, currency) {
  if (minor === null || minor === undefined) return '—';
  return `${(Number(minor) / 100).toFixed(2)} ${currency || ''}`.trim();
}

function statusText(status) {
  return h('span', { class: `status-${status}`, 'data-testid': 'status' }, status);
}

function json(value) {
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}

// ---------- API ----------

class ApiFailure extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body, options = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  if (options.ifMatch) headers['If-Match'] = options.ifMatch;
  const url = path.startsWith('/') ? path : `/api/v1/${path}`;
  let res;
  try {
    res = await fetch(url, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiFailure(0, { title: 'Network error', detail: 'The server could not be reached; try again.' });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 500) }; }
  }
  if (res.status === 401 && !options.quiet401) {
    session.csrf = null;
    showSignIn('Your session has ended; sign in again.');
    throw new ApiFailure(401, data);
  }
  if (!res.ok) throw new ApiFailure(res.status, data);
  return { data, etag: res.headers.get('ETag'), status: res.status };
}

const get = async (path) => (await api('GET', path)).data;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// A problem document, as an alert: what went wrong, the missing permission (403), the fields (422).
function problemView(error) {
  const p = (error && error.problem) || {};
  const title = p.title || (error.status ? `HTTP ${error.status}` : 'Error');
  return h('div', { class: 'alert', role: 'alert', 'data-testid': 'problem' },
    h('strong', {}, title), ': ', p.detail || error.message,
    p.permission ? h('div', {}, 'Missing permission: ', h('code', {}, p.permission)) : null,
    Array.isArray(p.errors) && p.errors.length
      ? h('ul', {}, p.errors.map((e) => h('li', { 'data-testid': 'field-error' }, h('code', {}, e.field), ' ', e.message)))
      : null);
}

// A form whose submit calls `action(values)`; errors are shown in it, the page is reloaded after.
function form(className, fields, submitLabel, action, extra = {}) {
  const status = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: extra.danger ? 'danger' : null }, submitLabel);
  const el = h('form', { class: className, 'data-testid': extra.testid, 'aria-label': extra.label || submitLabel },
    fields, button, status);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (extra.confirm && !window.confirm(extra.confirm)) return;
    button.disabled = true;
    status.replaceChildren(h('span', { class: 'loading', role: 'status' }, 'Working…'));
    try {
      const result = await action(new FormData(el), el);
      status.replaceChildren();
      if (result instanceof Node) status.replaceChildren(result);
      else if (!extra.stay) await route();
    } catch (e) {
      if (e.status !== 401) status.replaceChildren(problemView(e));
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

function field(label, name, attrs = {}) {
  return h('label', {}, label, h('input', { name, ...attrs }));
}

function choice(label, name, options, attrs = {}) {
  return h('label', {}, label,
    h('select', { name, ...attrs }, options.map((o) => {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      return h('option', { value, selected: attrs.value === value }, text);
    })));
}

function checkboxes(legend, name, values, checked = []) {
  return h('fieldset', {}, h('legend', {}, legend),
    h('div', { class: 'checks' }, values.map((v) => {
      const [value, text] = Array.isArray(v) ? v : [v, v];
      return h('label', { class: 'check' }, h('input', { type: 'checkbox', name, value, checked: checked.includes(value) }), text);
    })));
}

// A button that calls the API and reloads the page (or shows the problem next to it).
function actionButton(label, action, extra = {}) {
  const holder = h('span', {});
  const button = h('button', { type: 'button', class: extra.danger ? 'danger' : 'secondary', 'aria-label': extra.label }, label);
  button.addEventListener('click', async () => {
    if (extra.confirm && !window.confirm(extra.confirm)) return;
    button.disabled = true;
    try {
      await action();
      await route();
    } catch (e) {
      if (e.status !== 401) holder.replaceChildren(button, problemView(e));
    } finally {
      button.disabled = false;
    }
  });
  holder.append(button);
  return holder;
}

// A paged table: `path` is fetched with `limit` and the cursor; Previous/Next follow the
// API's cursors. Columns are [header, item -> cell].
function pagedTable(path, params, columns, options = {}) {
  const box = h('div', { class: 'table-wrap', 'data-testid': options.testid });
  const load = async (cursor) => {
    box.replaceChildren(h('p', { class: 'loading', role: 'status' }, 'Loading…'));
    try {
      const page = await get(path + query({ ...params, limit: options.limit || 20, cursor, count: 'exact' }));
      const rows = page.items.map((item) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(item)))));
      const pager = h('div', { class: 'pager' },
        h('button', { type: 'button', class: 'secondary', disabled: !page.prev_cursor, onclick: () => load(page.prev_cursor) }, 'Previous'),
        h('button', { type: 'button', class: 'secondary', disabled: !page.next_cursor, onclick: () => load(page.next_cursor) }, 'Next'),
        h('span', {}, page.total === undefined || page.total === null ? '' : `${page.total}${page.total_capped ? '+' : ''} in all`));
      box.replaceChildren(
        page.items.length
          ? h('table', {}, h('thead', {}, h('tr', {}, columns.map(([title]) => h('th', { scope: 'col' }, title)))), h('tbody', {}, rows))
          : h('p', { class: 'muted' }, options.empty || 'Nothing here yet.'),
        pager);
    } catch (e) {
      if (e.status !== 401) box.replaceChildren(problemView(e));
    }
  };
  load(undefined);
  return box;
}

// ---------- session ----------

async function loadSession() {
  const res = await api('GET', '/console/session', undefined, { quiet401: true });
  session.tokenSignIn = res.data.token_sign_in;
  session.csrf = res.data.signed_in ? res.data.csrf_token : null;
  return res.data.signed_in;
}

async function showSignIn(message) {
  document.getElementById('top').hidden = true;
  document.getElementById('tabs').hidden = true;
  let providers = [];
  try { providers = (await api('GET', 'auth/providers', undefined, { quiet401: true })).data; } catch { /* shown below */ }
  const box = h('section', { class: 'card signin' }, h('h1', {}, 'Sign in to tenantry'),
    message ? h('p', { class: 'notice', role: 'status' }, message) : null,
    providers.length ? providers.map((p) => h('a', { class: 'provider', href: `/console/login/${enc(p.name)}` }, `Sign in with ${p.display_name}`))
      : h('p', { class: 'muted' }, 'No identity provider is configured.'));
  if (session.tokenSignIn) {
    box.append(h('h2', {}, 'Development: paste an access token'),
      form('stack', [h('label', {}, 'Access token', h('textarea', { name: 'token', rows: 3, required: true, autocomplete: 'off', spellcheck: 'false' }))],
        'Sign in with token', async (values) => {
          await api('POST', '/console/session/token', { token: values.get('token') }, { quiet401: true });
          location.hash = '#/';
          await start();
        }, { stay: true, testid: 'token-sign-in' }));
  }
  render(box);
}

async function signOut() {
  try { await api('POST', '/console/session/logout'); } catch { /* signed out either way */ }
  session.csrf = null;
  session.me = null;
  orgCache.clear();
  location.hash = '#/';
  showSignIn('You are signed out.');
}

// ---------- organization context ----------

async function permissionsOf(org) {
  if (!session.builtin) session.builtin = await get('permissions');
  if (org.role !== 'custom') {
    const role = (session.builtin.builtin_roles || []).find((r) => r.name === org.role);
    return new Set(role ? role.permissions : []);
  }
  const me = await get(`orgs/${enc(org.id)}/members/${enc(session.me.id)}`);
  const role = await get(`orgs/${enc(org.id)}/roles/${enc(me.custom_role_id)}`);
  return new Set(role.permissions);
}

async function orgContext(orgId, tab) {
  let ctx = orgCache.get(orgId);
  if (!ctx) {
    const org = await get(`orgs/${enc(orgId)}`);
    ctx = { org, permissions: await permissionsOf(org) };
    orgCache.set(orgId, ctx);
  }
  drawOrgBar(ctx.org, tab);
  return ctx;
}

function can(ctx, permission) {
  return ctx.permissions.has(permission);
}

// Read-only pages say which permission the form they do not show would need.
function gated(ctx, permission, build) {
  if (can(ctx, permission)) return build();
  return h('p', { class: 'readonly', 'data-testid': 'read-only' }, `Read-only: changing this needs the permission ${permission}.`);
}

const TABS = [
  ['', 'Overview'], ['workspaces', 'Workspaces'], ['members', 'Members & roles'], ['api-keys', 'API keys'],
  ['flags', 'Flags'], ['billing', 'Billing'], ['audit', 'Audit log'],
];

function drawOrgBar(org, tab) {
  const bar = document.getElementById('org-bar');
  const select = h('select', { 'aria-label': 'Organization', 'data-testid': 'org-switcher' },
    h('option', { value: '' }, 'Choose an organization…'),
    session.orgs.map((o) => h('option', { value: o.id, selected: org && o.id === org.id }, o.name)));
  select.addEventListener('change', () => { if (select.value) location.hash = `#/orgs/${enc(select.value)}`; });
  bar.replaceChildren(...[select,
    org ? h('span', { class: 'badge', 'data-testid': 'org-name' }, org.name) : null,
    org ? h('span', { class: 'badge', title: 'Region' }, `region ${org.region}`) : null,
    org ? h('span', { class: 'badge', title: 'Data mode' }, `data ${org.data_mode}`) : null,
    org ? h('span', { class: 'badge', title: 'Your role' }, `role ${org.role}`) : null,
    session.admin ? link('/admin', 'Platform admin') : null].filter(Boolean));
  const tabs = document.getElementById('tabs');
  tabs.hidden = !org;
  tabs.replaceChildren(...(org ? TABS.map(([path, title]) =>
    link(`/orgs/${enc(org.id)}${path ? '/' + path : ''}`, title, { 'aria-current': tab === path ? 'page' : null })) : []));
}

// ---------- pages ----------

async function homePage() {
  drawOrgBar(null);
  const regions = ['us', 'eu'];
  render(h('h1', {}, 'Your organizations'),
    h('section', { class: 'card' },
      pagedTable('orgs', {}, [
        ['Name', (o) => link(`/orgs/${enc(o.id)}`, o.name)],
        ['Slug', (o) => o.slug], ['Region', (o) => o.region], ['Data mode', (o) => o.data_mode], ['Your role', (o) => o.role],
      ], { testid: 'orgs', empty: 'You belong to no organization yet.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Create an organization'),
      form('inline', [
        field('Name', 'name', { required: true, maxlength: 200 }),
        field('Slug', 'slug', { required: true, pattern: '[a-z0-9][a-z0-9\\-]*', maxlength: 63 }),
        choice('Region', 'region', regions),
        choice('Data mode', 'data_mode', ['metadata_only', 'full']),
      ], 'Create organization', async (v) => {
        const { data } = await api('POST', 'orgs', { name: v.get('name'), slug: v.get('slug'), region: v.get('region'), data_mode: v.get('data_mode') });
        await refreshOrgs();
        location.hash = `#/orgs/${enc(data.id)}`;
        return h('span', {});
      }, { testid: 'create-org' })),
    h('section', { class: 'card' }, h('h2', {}, 'Accept an invitation'),
      form('inline', [field('Invitation token', 'token', { required: true, autocomplete: 'off' })], 'Accept', async (v) => {
        const { data } = await api('POST', 'invitations/accept', { token: v.get('token').trim() });
        await refreshOrgs();
        location.hash = `#/orgs/${enc(data.organization_id)}`;
        return h('span', {});
      }, { testid: 'accept-invitation' })));
}

async function orgPage(orgId) {
  const ctx = await orgContext(orgId, '');
  const o = ctx.org;
  render(h('h1', {}, o.name),
    h('section', { class: 'card' }, h('dl', { class: 'facts' },
      h('dt', {}, 'Slug'), h('dd', {}, o.slug),
      h('dt', {}, 'Region'), h('dd', { 'data-testid': 'org-region' }, o.region),
      h('dt', {}, 'Data mode'), h('dd', {}, o.data_mode),
      h('dt', {}, 'Your role'), h('dd', {}, o.role),
      h('dt', {}, 'Created'), h('dd', {}, when(o.created_at)),
      h('dt', {}, 'Signed in as'), h('dd', {}, session.me.email || session.me.id))),
    h('section', { class: 'card' }, h('h2', {}, 'Rename'),
      gated(ctx, 'org:update', () => form('inline', [field('Name', 'name', { required: true, value: o.name, maxlength: 200 })], 'Save', async (v) => {
        await api('PATCH', `orgs/${enc(o.id)}`, { name: v.get('name') });
        orgCache.delete(o.id);
        await refreshOrgs();
      }))));
}

async function workspacesPage(orgId) {
  const ctx = await orgContext(orgId, 'workspaces');
  const base = `orgs/${enc(orgId)}/workspaces`;
  const write = can(ctx, 'workspaces:write');
  const del = can(ctx, 'workspaces:delete');
  const prefix = new URLSearchParams(location.hash.split('?')[1] || '').get('name_prefix') || '';
  render(h('h1', {}, 'Workspaces'),
    h('section', { class: 'card' },
      form('inline', [field('Name starts with', 'name_prefix', { value: prefix })], 'Filter', async (v) => {
        location.hash = `#/orgs/${enc(orgId)}/workspaces${query({ name_prefix: v.get('name_prefix') })}`;
        return h('span', {});
      }, { stay: true, label: 'Filter workspaces' }),
      pagedTable(base, { name_prefix: prefix, sort: 'name' }, [
        ['Name', (w) => link(`/orgs/${enc(orgId)}/workspaces/${enc(w.id)}`, w.name)],
        ['Region', (w) => w.region], ['Created', (w) => when(w.created_at)],
        ['', (w) => h('div', {},
          write ? form('inline', [field('New name', 'name', { required: true, value: w.name })], 'Rename', async (v) => {
            await api('PATCH', `${base}/${enc(w.id)}`, { name: v.get('name') });
          }, { label: `Rename ${w.name}` }) : null,
          del ? actionButton('Delete', () => api('DELETE', `${base}/${enc(w.id)}`), { danger: true, confirm: `Delete workspace ${w.name}?`, label: `Delete ${w.name}` }) : null)],
      ], { testid: 'workspaces', empty: 'No workspaces yet.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Create a workspace'),
      gated(ctx, 'workspaces:write', () => form('inline', [field('Name', 'name', { required: true, maxlength: 200 })], 'Create workspace', async (v) => {
        const { data } = await api('POST', base, { name: v.get('name') });
        location.hash = `#/orgs/${enc(orgId)}/workspaces/${enc(data.id)}`;
        return h('span', {});
      }, { testid: 'create-workspace' }))));
}

const PROVIDERS = ['openai', 'anthropic', 'azure_openai'];

async function workspacePage(orgId, wsId) {
  const ctx = await orgContext(orgId, 'workspaces');
  const base = `orgs/${enc(orgId)}/workspaces/${enc(wsId)}`;
  const ws = await get(base);
  const keys = can(ctx, 'provider_keys:manage') ? await get(`${base}/provider-keys`).catch((e) => e) : null;
  const keyRows = Array.isArray(keys) ? keys : [];
  render(h('p', {}, link(`/orgs/${enc(orgId)}/workspaces`, '← Workspaces')),
    h('h1', {}, ws.name),
    h('section', { class: 'card' }, h('h2', {}, 'Workflows'),
      pagedTable(`${base}/workflows`, {}, [
        ['Name', (w) => link(`/orgs/${enc(orgId)}/workspaces/${enc(wsId)}/workflows/${enc(w.id)}`, w.name)],
        ['Latest version', (w) => (w.latest_version ? `v${w.latest_version}` : 'draft only')],
        ['Updated', (w) => when(w.updated_at)],
      ], { testid: 'workflows', empty: 'No workflows yet.' }),
      h('h2', {}, 'Create a workflow'),
      gated(ctx, 'workflows:write', () => workflowEditor({ name: '', definition: 'steps:\n  - id: hello\n    uses: core.echo\n    with: {greeting: hello}\n' }, async (name, definition) => {
        const { data } = await api('POST', `${base}/workflows`, { name, definition });
        location.hash = `#/orgs/${enc(orgId)}/workspaces/${enc(wsId)}/workflows/${enc(data.id)}`;
      }, 'Create workflow'))),
    h('section', { class: 'card' }, h('h2', {}, 'Runs'),
      pagedTable(`${base}/runs`, { sort: '-created_at' }, runColumns(orgId, wsId), { testid: 'runs', empty: 'No runs yet.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Provider keys'),
      keys instanceof ApiFailure ? problemView(keys) : null,
      keys === null ? h('p', { class: 'readonly' }, 'Reading provider keys needs the permission provider_keys:manage.') : null,
      keyRows.length ? h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'provider-keys' },
        h('thead', {}, h('tr', {}, ['Provider', 'Key', 'Endpoint', 'Updated', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, keyRows.map((k) => h('tr', {},
          h('td', {}, k.provider), h('td', { class: 'mono', 'data-testid': 'masked-key' }, k.masked_key), h('td', {}, k.endpoint || '—'),
          h('td', {}, when(k.updated_at)),
          h('td', {}, can(ctx, 'provider_keys:manage') ? actionButton('Delete', () => api('DELETE', `${base}/provider-keys/${enc(k.provider)}`), { danger: true, confirm: `Delete the ${k.provider} key?` }) : null)))))) : (keys !== null ? h('p', { class: 'muted' }, 'No provider keys stored.') : null),
      gated(ctx, 'provider_keys:manage', () => form('inline', [
        choice('Provider', 'provider', PROVIDERS),
        field('API key', 'api_key', { type: 'password', required: true, autocomplete: 'off' }),
        field('Endpoint (Azure only)', 'endpoint', { type: 'url', placeholder: 'https://NAME.openai.azure.com' }),
      ], 'Store key', async (v) => {
        const body = { api_key: v.get('api_key') };
        if (v.get('endpoint')) body.endpoint = v.get('endpoint');
        await api('PUT', `${base}/provider-keys/${enc(v.get('provider'))}`, body);
      }, { testid: 'store-provider-key' }))));
}

function runColumns(orgId, wsId) {
  return [
    ['Run', (r) => link(`/orgs/${enc(orgId)}/workspaces/${enc(wsId)}/runs/${enc(r.id)}`, r.id.slice(0, 8), { class: 'mono' })],
    ['Status', (r) => statusText(r.status)], ['Version', (r) => `v${r.version}`],
    ['Created', (r) => when(r.created_at)], ['Finished', (r) => when(r.finished_at)],
  ];
}

// The YAML editor: a textarea with line numbers; a 422's "line N, column M" marks line N.
function workflowEditor(workflow, save, label, readOnly) {
  const gutter = h('pre', { class: 'gutter', 'aria-hidden': 'true' });
  const area = h('textarea', { name: 'definition', spellcheck: 'false', 'aria-label': 'Workflow definition (YAML)', readonly: readOnly, 'data-testid': 'yaml' });
  area.value = workflow.definition || '';
  const errorLines = new Set();
  const numbers = () => {
    const count = area.value.split('\n').length;
    gutter.replaceChildren(...Array.from({ length: count }, (_, i) =>
      h('span', { class: errorLines.has(i + 1) ? 'error-line' : null, 'data-line': i + 1 }, i + 1)));
    area.rows = Math.max(count, 8);
  };
  area.addEventListener('input', () => { errorLines.clear(); numbers(); });
  numbers();
  const status = h('div', { 'aria-live': 'polite' });
  const name = h('input', { name: 'name', required: true, value: workflow.name, maxlength: 200, readonly: readOnly });
  const button = h('button', { type: 'submit' }, label);
  const el = h('form', { class: 'stack', 'data-testid': 'workflow-editor', 'aria-label': label },
    h('label', {}, 'Name', name), h('div', { class: 'editor' }, gutter, area), readOnly ? null : button, status);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    status.replaceChildren();
    try {
      await save(name.value, area.value);
    } catch (e) {
      if (e.status === 401) return;
      errorLines.clear();
      for (const err of (e.problem && e.problem.errors) || []) {
        const m = /line (\d+), column (\d+)/.exec(err.message || '');
        if (m) errorLines.add(Number(m[1]));
      }
      numbers();
      status.replaceChildren(...[problemView(e),
        errorLines.size ? h('p', { class: 'alert', 'data-testid': 'yaml-error-line' }, `Error at line ${[...errorLines].join(', ')}.`) : null].filter(Boolean));
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

async function workflowPage(orgId, wsId, wfId) {
  const ctx = await orgContext(orgId, 'workspaces');
  const base = `orgs/${enc(orgId)}/workspaces/${enc(wsId)}/workflows/${enc(wfId)}`;
  const res = await api('GET', base);
  const wf = res.data;
  let etag = res.etag;
  const archived = Boolean(wf.archived_at);
  render(h('p', {}, link(`/orgs/${enc(orgId)}/workspaces/${enc(wsId)}`, '← Workspace')),
    h('h1', {}, wf.name),
    h('p', { class: 'muted' }, wf.latest_version ? `Latest published version: v${wf.latest_version}` : 'Not published yet.', archived ? ' Archived.' : ''),
    h('section', { class: 'card' }, h('h2', {}, 'Draft'),
      !can(ctx, 'workflows:write') ? h('p', { class: 'readonly', 'data-testid': 'read-only' }, 'Read-only: editing needs the permission workflows:write.') : null,
      workflowEditor(wf, async (name, definition) => {
        const saved = await api('PATCH', base, { name, definition }, { ifMatch: etag });
        etag = saved.etag;
        await route();
      }, 'Save draft', archived || !can(ctx, 'workflows:write')),
      h('div', { class: 'pager' },
        can(ctx, 'workflows:publish') && !archived ? actionButton('Publish draft', async () => {
          const fresh = await api('GET', base);
          await api('POST', `${base}/publish`, undefined, { ifMatch: fresh.etag });
        }) : h('span', { class: 'readonly' }, archived ? '' : 'Publishing needs the permission workflows:publish.'),
        can(ctx, 'workflows:write') && !archived ? actionButton('Archive', () => api('POST', `${base}/archive`), { danger: true, confirm: `Archive ${wf.name}?` }) : null)),
    h('section', { class: 'card' }, h('h2', {}, 'Start a run'),
      wf.latest_version && can(ctx, 'runs:execute')
        ? form('stack', [h('label', {}, 'Input (JSON object)', h('textarea', { name: 'input', rows: 3, spellcheck: 'false' }, '{}'))], 'Start run', async (v) => {
          let input;
          try { input = JSON.parse(v.get('input') || '{}'); } catch (e) {
            throw new ApiFailure(422, { title: 'Invalid input', detail: `The input is not JSON: ${e.message}` });
          }
          const { data } = await api('POST', `${base}/runs`, { input });
          location.hash = `#/orgs/${enc(orgId)}/workspaces/${enc(wsId)}/runs/${enc(data.id)}`;
          return h('span', {});
        }, { testid: 'start-run' })
        : h('p', { class: 'readonly' }, wf.latest_version ? 'Starting runs needs the permission runs:execute.' : 'Publish a version first.'),
      h('h2', {}, 'Runs of this workflow'),
      pagedTable(`orgs/${enc(orgId)}/workspaces/${enc(wsId)}/runs`, { workflow_id: wfId, sort: '-created_at' }, runColumns(orgId, wsId), { empty: 'No runs yet.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Published versions'),
      pagedTable(`${base}/versions`, {}, [
        ['Version', (v) => `v${v.version}`], ['Published', (v) => when(v.published_at)],
        ['Definition', (v) => h('details', {}, h('summary', {}, 'Show'), h('pre', { class: 'json' }, v.definition))],
      ], { testid: 'versions', empty: 'No published version yet.' })));
}

async function runPage(orgId, wsId, runId) {
  await orgContext(orgId, 'workspaces');
  const ctx = orgCache.get(orgId);
  const base = `orgs/${enc(orgId)}/workspaces/${enc(wsId)}`;
  const run = await get(`${base}/runs/${enc(runId)}`);
  let steps = [];
  try {
    const version = await get(`${base}/workflows/${enc(run.workflow_id)}/versions/${enc(run.version)}`);
    steps = (version.spec && version.spec.steps) || [];
  } catch { /* the run still shows */ }
  const failedAt = run.error && run.error.step;
  let reachedFailure = false;
  const stepState = (step) => {
    if (run.status === 'succeeded') return 'succeeded';
    if (run.status === 'failed' || run.status === 'cancelled') {
      if (step.id === failedAt) { reachedFailure = true; return 'failed'; }
      return reachedFailure || !failedAt ? 'not run' : 'succeeded';
    }
    return run.status === 'running' ? 'running' : 'queued';
  };
  const live = run.status === 'queued' || run.status === 'running';
  render(h('p', {}, link(`/orgs/${enc(orgId)}/workspaces/${enc(wsId)}/workflows/${enc(run.workflow_id)}`, '← Workflow')),
    h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.id)),
    h('section', { class: 'card' }, h('dl', { class: 'facts' },
      h('dt', {}, 'Status'), h('dd', { 'data-testid': 'run-status' }, statusText(run.status)),
      h('dt', {}, 'Version'), h('dd', {}, `v${run.version}`),
      h('dt', {}, 'Attempts'), h('dd', {}, run.attempts),
      h('dt', {}, 'Created'), h('dd', {}, when(run.created_at)),
      h('dt', {}, 'Started'), h('dd', {}, when(run.started_at)),
      h('dt', {}, 'Finished'), h('dd', {}, when(run.finished_at)),
      run.error ? [h('dt', {}, 'Error'), h('dd', {}, `${run.error.code}: ${run.error.message || ''}`)] : null),
      live && can(ctx, 'runs:execute') ? actionButton('Cancel run', () => api('POST', `${base}/runs/${enc(run.id)}/cancel`), { danger: true, confirm: 'Cancel this run?' }) : null,
      live ? h('p', { class: 'muted', role: 'status' }, 'Refreshing while the run is in progress…') : null),
    h('section', { class: 'card' }, h('h2', {}, 'Steps'),
      h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'steps' },
        h('thead', {}, h('tr', {}, ['Step', 'Action', 'Status', 'Output'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, steps.map((s) => h('tr', {}, h('td', {}, s.id), h('td', { class: 'mono' }, s.uses),
          h('td', {}, stepState(s)),
          h('td', {}, run.output && run.output[s.id] !== undefined ? json(run.output[s.id]) : h('span', { class: 'muted' }, run.output ? '—' : 'not stored (metadata-only mode)')))))))));
  if (live) {
    const hash = location.hash;
    setTimeout(() => { if (location.hash === hash) route(); }, 1000);
  }
}

async function membersPage(orgId) {
  const ctx = await orgContext(orgId, 'members');
  const base = `orgs/${enc(orgId)}`;
  if (!session.builtin) session.builtin = await get('permissions');
  const manage = can(ctx, 'members:manage');
  const roleNames = (session.builtin.builtin_roles || []).map((r) => r.name).filter((n) => n !== 'custom');
  const customRoles = can(ctx, 'members:read') ? (await get(`${base}/roles${query({ limit: 200 })}`)).items : [];
  const roleOptions = [...roleNames.map((n) => [n, n]), ...customRoles.map((r) => [`custom:${r.id}`, `custom: ${r.name}`])];
  const roleBody = (value) => (value.startsWith('custom:') ? { role: 'custom', custom_role_id: value.slice(7) } : { role: value });
  const workspaces = (await get(`${base}/workspaces${query({ limit: 200, sort: 'name' })}`)).items;
  const permissionNames = (session.builtin.permissions || []).map((p) => p.name);
  render(h('h1', {}, 'Members & roles'),
    h('section', { class: 'card' }, h('h2', {}, 'Members'),
      pagedTable(`${base}/members`, {}, [
        ['Member', (m) => [m.display_name || m.email || m.user_id, m.email && m.display_name ? h('div', { class: 'muted' }, m.email) : null]],
        ['Role', (m) => (m.role === 'custom' ? `custom: ${(customRoles.find((r) => r.id === m.custom_role_id) || {}).name || m.custom_role_id}` : m.role)],
        ['Since', (m) => when(m.created_at)],
        ['', (m) => (manage && m.user_id !== session.me.id ? h('div', {},
          form('inline', [choice('Role', 'role', roleOptions, { value: m.role === 'custom' ? `custom:${m.custom_role_id}` : m.role })], 'Change role', async (v) => {
            await api('PATCH', `${base}/members/${enc(m.user_id)}`, roleBody(v.get('role')));
          }, { label: `Change role of ${m.email || m.user_id}` }),
          restrictionEditor(base, m, workspaces),
          actionButton('Remove', () => api('DELETE', `${base}/members/${enc(m.user_id)}`), { danger: true, confirm: `Remove ${m.email || m.user_id}?`, label: `Remove ${m.email || m.user_id}` })) : null)],
      ], { testid: 'members' })),
    h('section', { class: 'card' }, h('h2', {}, 'Invite someone'),
      gated(ctx, 'members:manage', () => form('inline', [
        field('Email', 'email', { type: 'email', required: true }), choice('Role', 'role', roleOptions, { value: 'viewer' }),
      ], 'Send invitation', async (v) => {
        const { data } = await api('POST', `${base}/invitations`, { email: v.get('email'), ...roleBody(v.get('role')) });
        return h('div', { class: 'notice', 'data-testid': 'invitation-token' }, 'Invitation created. Give this token to the invitee (shown once): ',
          h('div', { class: 'secret' }, data.token));
      }, { testid: 'invite' })),
      manage ? pagedTable(`${base}/invitations`, {}, [
        ['Email', (i) => i.email], ['Role', (i) => i.role], ['Expires', (i) => when(i.expires_at)],
        ['State', (i) => (i.accepted_at ? 'accepted' : i.revoked_at ? 'revoked' : 'open')],
        ['', (i) => (manage && !i.accepted_at && !i.revoked_at ? actionButton('Revoke', () => api('DELETE', `${base}/invitations/${enc(i.id)}`), { danger: true }) : null)],
      ], { empty: 'No invitations.' }) : null),
    h('section', { class: 'card' }, h('h2', {}, 'Custom roles'),
      customRoles.length ? h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'roles' },
        h('thead', {}, h('tr', {}, ['Role', 'Permissions', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, customRoles.map((r) => h('tr', {}, h('td', {}, r.name, r.description ? h('div', { class: 'muted' }, r.description) : null),
          h('td', { class: 'mono' }, r.permissions.join(', ')),
          h('td', {}, can(ctx, 'roles:manage') ? actionButton('Delete', () => api('DELETE', `${base}/roles/${enc(r.id)}`), { danger: true, confirm: `Delete role ${r.name}?` }) : null)))))) : h('p', { class: 'muted' }, 'No custom roles.'),
      gated(ctx, 'roles:manage', () => form('stack', [
        field('Name', 'name', { required: true, pattern: '[a-z0-9_\\-]+', maxlength: 63 }), field('Description', 'description'),
        checkboxes('Permissions (only those you hold can be granted)', 'permissions', permissionNames.filter((p) => can(ctx, p))),
      ], 'Create role', async (v) => {
        await api('POST', `${base}/roles`, { name: v.get('name'), description: v.get('description') || null, permissions: v.getAll('permissions') });
      }, { testid: 'create-role' }))));
}

// A member's workspace restriction: shown on demand, changed with checkboxes.
function restrictionEditor(base, member, workspaces) {
  const box = h('details', {}, h('summary', {}, 'Workspaces'));
  box.addEventListener('toggle', async () => {
    if (!box.open || box.dataset.loaded) return;
    box.dataset.loaded = '1';
    try {
      const r = await get(`${base}/members/${enc(member.user_id)}/workspaces`);
      box.append(h('p', { class: 'muted' }, r.restricted ? 'Restricted to the checked workspaces.' : 'Not restricted: every workspace.'),
        form('stack', [checkboxes('Workspaces', 'workspace_ids', workspaces.map((w) => [w.id, w.name]), r.restricted ? r.workspace_ids : [])],
          'Restrict to checked', async (v) => {
            await api('PUT', `${base}/members/${enc(member.user_id)}/workspaces`, { workspace_ids: v.getAll('workspace_ids') });
          }),
        r.restricted ? actionButton('Lift restriction', () => api('PUT', `${base}/members/${enc(member.user_id)}/workspaces`, { workspace_ids: [] })) : null);
    } catch (e) {
      if (e.status !== 401) box.append(problemView(e));
    }
  });
  return box;
}

async function apiKeysPage(orgId) {
  const ctx = await orgContext(orgId, 'api-keys');
  const base = `orgs/${enc(orgId)}/api-keys`;
  if (!session.builtin) session.builtin = await get('permissions');
  const manage = can(ctx, 'api_keys:manage');
  render(h('h1', {}, 'API keys'),
    h('section', { class: 'card' },
      pagedTable(base, {}, [
        ['Name', (k) => k.name], ['Scopes', (k) => h('span', { class: 'mono' }, k.scopes.join(', '))],
        ['Created', (k) => when(k.created_at)], ['Last used', (k) => when(k.last_used_at)], ['Expires', (k) => when(k.expires_at)],
        ['State', (k) => (k.revoked_at ? 'revoked' : 'active')],
        ['', (k) => (manage && !k.revoked_at ? actionButton('Revoke', () => api('DELETE', `${base}/${enc(k.id)}`), { danger: true, confirm: `Revoke ${k.name}?`, label: `Revoke ${k.name}` }) : null)],
      ], { testid: 'api-keys', empty: 'No API keys.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Create an API key'),
      gated(ctx, 'api_keys:manage', () => form('stack', [
        field('Name', 'name', { required: true, maxlength: 200 }),
        field('Expires (optional)', 'expires_at', { type: 'datetime-local' }),
        checkboxes('Scopes (only permissions you hold)', 'scopes', (session.builtin.permissions || []).map((p) => p.name).filter((p) => can(ctx, p))),
      ], 'Create key', async (v, el) => {
        const body = { name: v.get('name'), scopes: v.getAll('scopes') };
        if (v.get('expires_at')) body.expires_at = new Date(v.get('expires_at')).toISOString();
        const { data } = await api('POST', base, body);
        el.reset();
        return h('div', { class: 'notice', 'data-testid': 'new-api-key' }, 'Copy the key now; it is shown once and never again: ',
          h('div', { class: 'secret' }, data.secret));
      }, { testid: 'create-api-key' }))));
}

async function flagsPage(orgId) {
  const ctx = await orgContext(orgId, 'flags');
  const base = `orgs/${enc(orgId)}/flags`;
  const flags = await get(base);
  const items = Array.isArray(flags) ? flags : flags.items || [];
  const manage = can(ctx, 'flags:write');
  render(h('h1', {}, 'Feature flags'),
    h('section', { class: 'card' },
      items.length ? h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'flags' },
        h('thead', {}, h('tr', {}, ['Flag', 'Default', 'Kill switch', 'This organization', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, items.map((f) => h('tr', {},
          h('td', {}, h('code', {}, f.key), f.description ? h('div', { class: 'muted' }, f.description) : null),
          h('td', {}, f.default_enabled ? 'on' : 'off'), h('td', {}, f.kill_switch ? 'pulled' : '—'),
          h('td', {}, f.config ? `${f.config.enabled ? 'on' : 'off'}${f.config.rollout_percentage !== null && f.config.rollout_percentage !== undefined ? `, ${f.config.rollout_percentage} %` : ''}` : 'not configured'),
          h('td', {}, manage ? h('div', {},
            form('inline', [
              h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'enabled', checked: Boolean(f.config && f.config.enabled) }), 'enabled'),
              field('Rollout %', 'rollout_percentage', { type: 'number', min: 0, max: 100, value: f.config && f.config.rollout_percentage !== null ? f.config.rollout_percentage : '' }),
            ], 'Save', async (v) => {
              const body = { enabled: v.get('enabled') === 'on' };
              if (v.get('rollout_percentage') !== '') body.rollout_percentage = Number(v.get('rollout_percentage'));
              await api('PUT', `${base}/${enc(f.key)}`, body);
            }, { label: `Configure ${f.key}` }),
            f.config ? actionButton('Reset', () => api('DELETE', `${base}/${enc(f.key)}`)) : null) : null)))))) : h('p', { class: 'muted' }, 'No flags are defined.'),
      manage ? null : h('p', { class: 'readonly', 'data-testid': 'read-only' }, 'Read-only: configuring flags needs the permission flags:write.')),
    h('section', { class: 'card' }, h('h2', {}, 'What you get'),
      actionButtonInline('Evaluate for me', async (holder) => {
        const { data } = await api('POST', `${base}/evaluate`, {});
        holder.replaceChildren(h('div', { class: 'table-wrap' }, h('table', {}, h('tbody', {},
          (data.flags || []).map((f) => h('tr', {}, h('td', {}, h('code', {}, f.key)), h('td', {}, f.value ? 'on' : 'off'), h('td', { class: 'muted' }, f.reason)))))));
      })));
}

// A button whose result is drawn next to it instead of reloading the page.
function actionButtonInline(label, action) {
  const out = h('div', {});
  const button = h('button', { type: 'button', class: 'secondary' }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try { await action(out); } catch (e) { if (e.status !== 401) out.replaceChildren(problemView(e)); } finally { button.disabled = false; }
  });
  return h('div', {}, button, out);
}

async function billingPage(orgId) {
  const ctx = await orgContext(orgId, 'billing');
  const base = `orgs/${enc(orgId)}`;
  if (!can(ctx, 'billing:read')) {
    render(h('h1', {}, 'Billing'), h('p', { class: 'readonly', 'data-testid': 'read-only' }, 'Billing needs the permission billing:read.'));
    return;
  }
  const plans = await get('plans');
  const planList = Array.isArray(plans) ? plans : plans.items || [];
  const subscription = await get(`${base}/subscription`).catch((e) => (e.status === 404 || e.status === 410 ? null : Promise.reject(e)));
  const balances = await get(`${base}/ledger/balances`);
  const usage = await get(`${base}/usage`);
  render(h('h1', {}, 'Billing'),
    h('section', { class: 'card' }, h('h2', {}, 'Plan and subscription'),
      subscription ? h('dl', { class: 'facts', 'data-testid': 'subscription' },
        h('dt', {}, 'Plan'), h('dd', {}, subscription.plan_id), h('dt', {}, 'Status'), h('dd', {}, subscription.status),
        h('dt', {}, 'Period'), h('dd', {}, `${when(subscription.current_period_start)} – ${when(subscription.current_period_end)}`),
        h('dt', {}, 'Provider'), h('dd', {}, subscription.provider || '—'))
        : h('p', { class: 'muted', 'data-testid': 'subscription' }, 'No subscription: the free plan applies.'),
      gated(ctx, 'billing:manage', () => h('div', {},
        form('inline', [choice('Plan', 'plan_id', planList.map((p) => [p.id, `${p.name} (${money(p.price_minor, p.currency)} / ${p.interval})`]), { value: subscription ? subscription.plan_id : undefined })], subscription ? 'Change plan' : 'Subscribe', async (v) => {
          await api('PUT', `${base}/subscription`, { plan_id: v.get('plan_id') });
        }, { confirm: 'Change the subscription?' }),
        subscription && subscription.status !== 'canceled' ? actionButton('Cancel subscription', () => api('DELETE', `${base}/subscription`), { danger: true, confirm: 'Cancel the subscription now?' }) : null))),
    h('section', { class: 'card' }, h('h2', {}, 'Invoices'),
      pagedTable(`${base}/invoices`, {}, [
        ['Number', (i) => i.number || i.id.slice(0, 8)], ['Status', (i) => i.status], ['Issued', (i) => when(i.issued_at)],
        ['Total', (i) => money(i.total_minor, i.currency)], ['Paid', (i) => money(i.amount_paid_minor, i.currency)],
        ['Lines', (i) => invoiceLines(base, i)],
      ], { testid: 'invoices', empty: 'No invoices.' })),
    h('section', { class: 'card' }, h('h2', {}, 'Balances'),
      balances.length ? h('table', {}, h('tbody', {}, balances.map((b) => h('tr', {}, h('td', {}, b.account), h('td', {}, money(b.balance_minor, b.currency))))))
        : h('p', { class: 'muted' }, 'No ledger entries.')),
    h('section', { class: 'card' }, h('h2', {}, 'Usage'),
      h('p', {}, `Requests today: ${usage.requests_today}`),
      usage.limits ? h('dl', { class: 'facts' }, Object.entries(usage.limits).map(([k, v]) => [h('dt', {}, k.replaceAll('_', ' ')), h('dd', {}, v === null ? 'unlimited' : String(v))])) : null,
      (usage.days || []).length ? h('div', { class: 'table-wrap' }, h('table', {},
        h('thead', {}, h('tr', {}, ['Day', 'API key', 'Requests'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, usage.days.map((d) => h('tr', {}, h('td', {}, d.day), h('td', { class: 'mono' }, d.api_key_id || 'people'), h('td', {}, d.requests))))))
        : h('p', { class: 'muted' }, 'No usage recorded in this period.')));
}

function invoiceLines(base, invoice) {
  const box = h('details', {}, h('summary', {}, 'Show'));
  box.addEventListener('toggle', async () => {
    if (!box.open || box.dataset.loaded) return;
    box.dataset.loaded = '1';
    try {
      const full = await get(`${base}/invoices/${enc(invoice.id)}`);
      box.append(h('table', {}, h('tbody', {}, (full.lines || []).map((l) => h('tr', {},
        h('td', {}, l.description), h('td', {}, `× ${l.quantity}`), h('td', {}, money(l.amount_minor, invoice.currency)))))));
    } catch (e) { if (e.status !== 401) box.append(problemView(e)); }
  });
  return box;
}

async function auditPage(orgId) {
  const ctx = await orgContext(orgId, 'audit');
  const base = `orgs/${enc(orgId)}/audit-events`;
  if (!can(ctx, 'audit:read')) {
    render(h('h1', {}, 'Audit log'), h('p', { class: 'readonly', 'data-testid': 'read-only' }, 'The audit log needs the permission audit:read.'));
    return;
  }
  const filters = new URLSearchParams(location.hash.split('?')[1] || '');
  const params = { sort: filters.get('sort') || '-created_at' };
  for (const k of ['action', 'outcome', 'since', 'until']) if (filters.get(k)) params[k] = filters.get(k);
  const chain = h('div', { 'data-testid': 'chain' }, h('p', { class: 'loading', role: 'status' }, 'Verifying the chain…'));
  get(`${base}/verify`).then((c) => chain.replaceChildren(
    c.intact ? h('p', { class: 'notice' }, `Chain intact: ${c.entries} entries, head #${c.head_seq}.`)
      : h('p', { class: 'alert', role: 'alert' }, `Chain broken at entry #${c.first_broken_seq}: ${c.reason}.`)))
    .catch((e) => { if (e.status !== 401) chain.replaceChildren(problemView(e)); });
  const isoOrEmpty = (value) => (value ? new Date(value).toISOString() : '');
  render(h('h1', {}, 'Audit log'),
    h('section', { class: 'card' }, h('h2', {}, 'Hash chain'), chain),
    h('section', { class: 'card' },
      form('inline', [
        field('Action', 'action', { value: params.action || '', placeholder: 'workspace.create' }),
        choice('Outcome', 'outcome', [['', 'any'], 'allowed', 'denied', 'failed'], { value: params.outcome || '' }),
        field('Since', 'since', { type: 'datetime-local' }), field('Until', 'until', { type: 'datetime-local' }),
        choice('Order', 'sort', [['-created_at', 'newest first'], ['created_at', 'oldest first']], { value: params.sort }),
      ], 'Filter', async (v) => {
        location.hash = `#/orgs/${enc(orgId)}/audit${query({ action: v.get('action'), outcome: v.get('outcome'), since: isoOrEmpty(v.get('since')), until: isoOrEmpty(v.get('until')), sort: v.get('sort') })}`;
        return h('span', {});
      }, { stay: true, label: 'Filter the audit log' }),
      pagedTable(base, params, [
        ['#', (e) => e.seq], ['When', (e) => when(e.occurred_at)], ['Actor', (e) => `${e.actor_type} ${e.actor_id || ''}`.trim()],
        ['Action', (e) => h('code', { 'data-testid': 'audit-action' }, e.action)], ['Target', (e) => `${e.target_type || ''} ${e.target_id || ''}`.trim()],
        ['Outcome', (e) => e.outcome], ['Details', (e) => (e.details && Object.keys(e.details).length ? json(e.details) : '—')],
      ], { testid: 'audit', limit: 50, empty: 'No entries match.' })));
}

async function adminPage() {
  drawOrgBar(null);
  const health = await get('admin/health');
  const filters = new URLSearchParams(location.hash.split('?')[1] || '');
  const suspended = filters.get('suspended') || '';
  render(h('h1', {}, 'Platform administration'),
    h('section', { class: 'card' }, h('h2', {}, 'System health'), h('dl', { class: 'facts', 'data-testid': 'health' },
      h('dt', {}, 'Region'), h('dd', {}, health.region),
      h('dt', {}, 'Migrations'), h('dd', {}, `${health.migrations_applied} of ${health.migrations_expected}`),
      h('dt', {}, 'Pool'), h('dd', {}, `${health.pool_available} available of ${health.pool_size}, ${health.pool_waiting} waiting`),
      h('dt', {}, 'Policy violations'), h('dd', {}, Array.isArray(health.policy_violations) ? (health.policy_violations.length ? health.policy_violations.join('; ') : 'none') : String(health.policy_violations)))),
    h('section', { class: 'card' }, h('h2', {}, 'Organizations'),
      form('inline', [choice('Show', 'suspended', [['', 'all'], ['true', 'suspended'], ['false', 'active']], { value: suspended })], 'Filter', async (v) => {
        location.hash = `#/admin${query({ suspended: v.get('suspended') })}`;
        return h('span', {});
      }, { stay: true, label: 'Filter organizations' }),
      pagedTable('admin/organizations', { suspended }, [
        ['Name', (o) => o.name], ['Slug', (o) => o.slug], ['Region', (o) => o.region], ['Members', (o) => o.members],
        ['State', (o) => (o.suspended_at ? `suspended ${when(o.suspended_at)}` : 'active')],
        ['', (o) => (o.suspended_at
          ? actionButton('Reactivate', () => api('POST', `admin/organizations/${enc(o.id)}/reactivate`, {}), { label: `Reactivate ${o.name}` })
          : actionButton('Suspend', () => api('POST', `admin/organizations/${enc(o.id)}/suspend`, {}), { danger: true, confirm: `Suspend ${o.name}? Every request to it will be refused.`, label: `Suspend ${o.name}` }))],
      ], { testid: 'admin-orgs' })));
}

// The same page for another tenant's object, a random id and a path that does not exist.
function notFoundPage() {
  return [h('h1', {}, 'Not found'),
    h('p', { 'data-testid': 'not-found' }, 'The resource does not exist or you do not have access to it.'),
    h('p', {}, link('/', 'Back to your organizations'))];
}

// ---------- routing ----------

const ROUTES = [
  [/^\/$/, homePage],
  [/^\/admin$/, adminPage],
  [/^\/orgs\/([^/]+)$/, orgPage],
  [/^\/orgs\/([^/]+)\/workspaces$/, workspacesPage],
  [/^\/orgs\/([^/]+)\/workspaces\/([^/]+)$/, workspacePage],
  [/^\/orgs\/([^/]+)\/workspaces\/([^/]+)\/workflows\/([^/]+)$/, workflowPage],
  [/^\/orgs\/([^/]+)\/workspaces\/([^/]+)\/runs\/([^/]+)$/, runPage],
  [/^\/orgs\/([^/]+)\/members$/, membersPage],
  [/^\/orgs\/([^/]+)\/api-keys$/, apiKeysPage],
  [/^\/orgs\/([^/]+)\/flags$/, flagsPage],
  [/^\/orgs\/([^/]+)\/billing$/, billingPage],
  [/^\/orgs\/([^/]+)\/audit$/, auditPage],
];

async function route() {
  if (!session.csrf) return;
  const path = (location.hash.replace(/^#/, '') || '/').split('?')[0];
  main.setAttribute('aria-busy', 'true');
  try {
    await draw(path);
  } finally {
    main.dataset.route = path;
    main.setAttribute('aria-busy', 'false');
  }
  document.title = `${(main.querySelector('h1') || {}).textContent || 'Console'} · tenantry`;
}

async function draw(path) {
  const found = ROUTES.map(([re, page]) => [re.exec(path), page]).find(([m]) => m);
  if (!found) {
    drawOrgBar(null);
    render(notFoundPage());
    return;
  }
  const [match, page] = found;
  try {
    await page(...match.slice(1).map(decodeURIComponent));
  } catch (e) {
    if (e.status === 401) return;
    if (e.status === 404) {
      drawOrgBar(null);
      render(notFoundPage());
    } else {
      render(h('h1', {}, 'Something went wrong'), problemView(e));
    }
  }
}

async function refreshOrgs() {
  session.orgs = (await get(`orgs${query({ limit: 200 })}`)).items;
}

async function start() {
  if (!(await loadSession())) {
    showSignIn();
    return;
  }
  session.me = await get('me');
  await refreshOrgs();
  session.admin = await api('GET', 'admin/health', undefined, {}).then(() => true, () => false);
  document.getElementById('user').textContent = session.me.display_name || session.me.email || session.me.id;
  document.getElementById('top').hidden = false;
  await route();
}

document.getElementById('sign-out').addEventListener('click', signOut);
document.querySelector('.skip').addEventListener('click', (event) => { event.preventDefault(); main.focus(); });
window.addEventListener('hashchange', () => { route().then(() => main.focus({ preventScroll: true })); });
start().catch((e) => render(h('h1', {}, 'The console could not start'), problemView(e)));
