/**
 * The floe console: three pages (pipelines, one pipeline, sources) rendered from /api/v1, refreshed
 * every two seconds. DOM is built with `h()` (text nodes, never innerHTML), so nothing the server sends
 * can become markup. Actions ask for confirmation in a <dialog> before they are sent.
 */
import './style.css';
import { api, ApiError, setToken, token, type PipelineDetail, type PipelineEntry, type Session, type SourceHealth } from './api.js';
import { bytes, duration, lineChart, rate } from './format.js';

type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false) continue;
    el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const app = document.getElementById('app')!;
const notice = document.getElementById('notice')!;
let session: Session = { token_configured: true, public_read: false, read_only: false };
const REFRESH_MS = 2000;

function showNotice(text: string, kind: 'error' | 'ok' = 'error'): void {
  notice.textContent = text;
  notice.className = text ? kind : '';
}

/** Asks the operator; resolves true on Confirm. */
function confirmAction(text: string): Promise<boolean> {
  const dialog = document.getElementById('confirm') as HTMLDialogElement;
  document.getElementById('confirm-text')!.textContent = text;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true }));
}

async function act(pipeline: string, action: string, table?: string): Promise<void> {
  const what = table ? `${action} ${table} in pipeline ${pipeline}` : `${action} pipeline ${pipeline}`;
  if (!(await confirmAction(`Really ${what}?`))) return;
  try {
    await api('POST', `/pipelines/${encodeURIComponent(pipeline)}/actions`, table ? { action, table } : { action });
    showNotice(`${what}: requested`, 'ok');
    await refresh();
  } catch (err) {
    showNotice(err instanceof Error ? err.message : String(err));
  }
}

function actionButton(label: string, pipeline: string, action: string, table?: string): HTMLButtonElement {
  const b = h(
    'button',
    { type: 'button', 'data-action': action, ...(table ? { 'data-table': table } : {}), disabled: session.read_only },
    label,
  );
  b.addEventListener('click', () => void act(pipeline, action, table));
  return b;
}

function stateBadge(state: string, breaker?: string | null): HTMLElement {
  return h('span', { class: `badge state-${state}` }, state, breaker && breaker !== 'closed' ? ` · breaker ${breaker}` : '');
}

// ---- pages ----------------------------------------------------------------------------------------

async function pipelinesPage(): Promise<Node> {
  const { pipelines } = await api<{ pipelines: PipelineEntry[] }>('GET', '/pipelines');
  if (pipelines.length === 0) return h('p', {}, 'No pipelines yet: add one with floe pipeline add, floe apply or POST /api/v1/pipelines.');
  const rows = pipelines.map((p) =>
    h(
      'tr',
      { 'data-pipeline': p.name },
      h('td', {}, h('a', { href: `#/pipelines/${encodeURIComponent(p.name)}` }, p.name)),
      h('td', {}, p.status),
      h('td', {}, stateBadge(p.state, p.destination_breaker)),
      h('td', {}, p.owner_worker ?? '–'),
      h('td', { class: 'num', 'data-field': 'lag_bytes' }, bytes(p.lag_bytes)),
      h('td', { class: 'num' }, duration(p.lag_seconds)),
      h('td', { class: 'num' }, rate(p.throughput_bytes_per_second ?? null)),
      h('td', { class: 'mono' }, p.durable_lsn ?? '–'),
      h('td', { class: 'error' }, p.last_error ?? ''),
      h('td', {}, p.status === 'PAUSE' ? actionButton('Resume', p.name, 'resume') : actionButton('Pause', p.name, 'pause')),
    ),
  );
  const head = ['Pipeline', 'Requested', 'State', 'Owner', 'Lag', 'Lag time', 'Throughput', 'Durable LSN', 'Last error', ''];
  return h('table', { id: 'pipelines' }, h('thead', {}, h('tr', {}, ...head.map((x) => h('th', {}, x)))), h('tbody', {}, ...rows));
}

async function pipelinePage(name: string): Promise<Node> {
  const p = await api<PipelineDetail>('GET', `/pipelines/${encodeURIComponent(name)}`);
  const facts: [string, Child][] = [
    ['Requested', p.status],
    ['State', stateBadge(p.state, p.destination_breaker)],
    ['Source → destination', `${p.source ?? '?'} → ${p.destination ?? '?'}`],
    ['Publication / slot', `${p.publication} / ${p.slot}`],
    ['Owner worker', p.owner_worker ?? '–'],
    ['Lag', `${bytes(p.lag_bytes)} · ${duration(p.lag_seconds)}`],
    ['Retained WAL', `${bytes(p.slot_retained_bytes)}${p.slot_wal_status ? ` (${p.slot_wal_status})` : ''}`],
    ['Durable LSN', p.durable_lsn ?? '–'],
    ['Options', JSON.stringify(p.options)],
    ['Last error', p.last_error ? `${p.last_error_at ?? ''} ${p.last_error}` : '–'],
  ];
  const tables = p.table_states.map((t) =>
    h(
      'tr',
      { 'data-table': t.table },
      h('td', {}, t.table),
      h(
        'td',
        {},
        stateBadge(t.skip ? 'skipped' : t.state),
        t.resync_requested_at ? h('span', { class: 'badge' }, 'resync requested') : null,
      ),
      h('td', { class: 'num' }, t.rows_snapshotted === null ? '–' : t.rows_snapshotted.toLocaleString()),
      h('td', { class: 'error' }, t.last_error ?? ''),
      h(
        'td',
        {},
        actionButton('Resync', p.name, 'resync', t.table),
        t.skip ? actionButton('Unskip', p.name, 'unskip', t.table) : actionButton('Skip', p.name, 'skip', t.table),
      ),
    ),
  );
  const series = (pick: (s: PipelineDetail['history'][number]) => number | null) => p.history.map((s) => ({ t: s.t, v: pick(s) }));
  return h(
    'div',
    {},
    h('h1', {}, p.name, ' ', p.status === 'PAUSE' ? actionButton('Resume', p.name, 'resume') : actionButton('Pause', p.name, 'pause')),
    h('dl', { class: 'facts' }, ...facts.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h(
      'section',
      { class: 'charts' },
      chartBox(
        'Lag (bytes)',
        series((s) => s.lag_bytes),
        bytes,
      ),
      chartBox(
        'Throughput (WAL bytes/s made durable)',
        series((s) => s.throughput_bytes_per_second),
        rate,
      ),
      chartBox(
        'Retained WAL',
        series((s) => s.retained_wal_bytes),
        bytes,
      ),
    ),
    h('h2', {}, 'Tables'),
    tables.length
      ? h(
          'table',
          { id: 'tables' },
          h('thead', {}, h('tr', {}, ...['Table', 'Phase', 'Rows snapshotted', 'Last error', ''].map((x) => h('th', {}, x)))),
          h('tbody', {}, ...tables),
        )
      : h('p', {}, 'No table reported yet.'),
    h('h2', {}, 'Recent alerts'),
    p.alerts.length
      ? h(
          'ul',
          { class: 'alerts' },
          ...p.alerts.map((a) => h('li', { class: `sev-${a.severity}` }, `${a.timestamp} ${a.type}: ${a.message}`)),
        )
      : h('p', {}, 'No alerts.'),
  );
}

function chartBox(title: string, points: { t: number; v: number | null }[], fmt: (n: number | null) => string): HTMLElement {
  const last = [...points].reverse().find((p) => p.v !== null)?.v ?? null;
  return h('figure', {}, h('figcaption', {}, `${title}: `, h('strong', {}, fmt(last))), lineChart(points, fmt));
}

async function sourcesPage(): Promise<Node> {
  const { thresholds, sources } = await api<{ thresholds: { warningMb: number; dangerMb: number }; sources: SourceHealth[] }>(
    'GET',
    '/monitor/sources',
  );
  if (sources.length === 0)
    return h('p', {}, 'No source checked yet: the WAL monitor checks the sources of the pipelines running on this worker.');
  const MIB = 1024 * 1024;
  return h(
    'div',
    {},
    h('p', {}, `Thresholds: warning ${thresholds.warningMb} MiB, danger ${thresholds.dangerMb} MiB of retained WAL per slot.`),
    ...sources.map((s) =>
      h(
        'section',
        { class: 'source', 'data-source': s.name },
        h('h2', {}, s.name, ' ', stateBadge(s.reachable ? 'reachable' : 'unreachable')),
        s.error ? h('p', { class: 'error' }, s.error) : null,
        h(
          'p',
          {},
          `pg_wal: ${s.walDirPrivilege ? bytes(s.walDirBytes) : 'unknown (grant pg_monitor)'} · growing ${rate(s.walGrowthBytesPerSecond)} · checked ${s.checkedAt ?? '–'}`,
        ),
        h(
          'table',
          {},
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ...['Slot', 'Status', 'Retained WAL', 'vs thresholds', 'safe_wal_size', 'Forecast to danger'].map((x) => h('th', {}, x)),
            ),
          ),
          h(
            'tbody',
            {},
            ...s.slots.map((slot) =>
              h(
                'tr',
                {},
                h('td', {}, slot.slot),
                h(
                  'td',
                  {},
                  stateBadge(slot.walStatus),
                  slot.active ? '' : ' inactive',
                  slot.stalledSeconds ? ` stalled ${duration(slot.stalledSeconds)}` : '',
                ),
                h('td', { class: 'num' }, bytes(slot.retainedBytes)),
                h(
                  'td',
                  {},
                  h('meter', {
                    min: '0',
                    max: String(thresholds.dangerMb * MIB),
                    low: String(thresholds.warningMb * MIB),
                    high: String(thresholds.dangerMb * MIB * 0.99),
                    optimum: '0',
                    value: String(slot.retainedBytes ?? 0),
                  }),
                ),
                h('td', { class: 'num' }, slot.safeWalSizeBytes === null ? 'unlimited' : bytes(slot.safeWalSizeBytes)),
                h('td', {}, slot.secondsUntilDanger === null ? 'not growing' : duration(slot.secondsUntilDanger)),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

// ---- routing and refresh --------------------------------------------------------------------------

function route(): { page: 'pipelines' | 'pipeline' | 'sources'; name?: string } {
  const hash = location.hash.replace(/^#/, '') || '/';
  const m = /^\/pipelines\/(.+)$/.exec(hash);
  if (m) return { page: 'pipeline', name: decodeURIComponent(m[1]!) };
  if (hash === '/sources') return { page: 'sources' };
  return { page: 'pipelines' };
}

let refreshing = false;
async function refresh(): Promise<void> {
  if (refreshing) return;
  refreshing = true;
  const r = route();
  for (const a of document.querySelectorAll<HTMLAnchorElement>('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === (r.page === 'sources' ? 'sources' : 'pipelines'));
  }
  try {
    const view = r.page === 'pipeline' ? await pipelinePage(r.name!) : r.page === 'sources' ? await sourcesPage() : await pipelinesPage();
    // A dialog open on the page must not be pulled from under the operator.
    app.replaceChildren(view);
    document.getElementById('live')!.className = 'live ok';
    if (notice.className === 'error' && notice.dataset.kind === 'load') showNotice('');
  } catch (err) {
    document.getElementById('live')!.className = 'live down';
    const needToken = err instanceof ApiError && err.status === 401;
    showNotice(needToken ? `${err.message}. Enter the API token above.` : err instanceof Error ? err.message : String(err));
    notice.dataset.kind = 'load';
  } finally {
    refreshing = false;
  }
}

async function start(): Promise<void> {
  session = await api<Session>('GET', '/session').catch(() => session);
  const form = document.getElementById('token-form') as HTMLFormElement;
  const input = document.getElementById('token') as HTMLInputElement;
  if (token()) input.placeholder = 'API token (set)';
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    input.value = '';
    showNotice('');
    input.placeholder = token() ? 'API token (set)' : 'API token';
    void refresh();
  });
  window.addEventListener('hashchange', () => void refresh());
  await refresh();
  setInterval(() => {
    if (!(document.getElementById('confirm') as HTMLDialogElement).open) void refresh();
  }, REFRESH_MS);
}

void start();
