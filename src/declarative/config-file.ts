/**
 * Declarative configuration: a YAML file naming sources, destinations and pipelines (`floe apply -f`),
 * and the same file written from the control plane (`floe export`). Secrets stay references.
 *
 * ```yaml
 * sources:
 *   app: { url: postgres://floe@db:5432/app, password: env:APP_PG_PASSWORD }
 * destinations:
 *   wh: { type: duckdb, url: duckdb:/var/lib/floe/wh.duckdb }
 * pipelines:
 *   app_to_wh: { source: app, destination: wh, publication: app_pub, status: START, options: { batch_max_ms: 200 } }
 * ```
 *
 * Applying computes a plan (create, change, remove with --prune, unchanged) by comparing each object's
 * validated form with its row, then carries it out in one transaction with the API's operations
 * (api/operations.ts: the CLI's checks). Only rows that differ are written, so applying a file twice
 * writes nothing the second time, and a changed pipeline option bumps only that pipeline's
 * config_version (restarting only it); a changed source or destination restarts the pipelines on it.
 */
import { isDeepStrictEqual } from 'node:util';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import type pg from 'pg';
import { FloeError, printable } from '../errors.js';
import { findPipeline, listDestinations, listPipelines, listSources } from '../control/repository.js';
import * as ops from '../api/operations.js';

const obj = z.record(z.string(), z.unknown());
const fileSchema = z.strictObject({
  sources: z
    .record(z.string(), z.strictObject({ url: z.string(), password: z.string().nullable().optional(), options: obj.optional() }).nullable())
    .optional(),
  destinations: z
    .record(
      z.string(),
      z.strictObject({
        type: z.string(),
        url: z.string().optional(),
        path: z.string().optional(),
        secrets: obj.optional(),
        options: obj.optional(),
      }),
    )
    .optional(),
  pipelines: z
    .record(
      z.string(),
      z.strictObject({
        source: z.string(),
        destination: z.string(),
        publication: z.string(),
        slot: z.string().optional(),
        status: z.enum(['START', 'PAUSE'], { error: 'must be START or PAUSE' }).optional(),
        options: obj.optional(),
      }),
    )
    .optional(),
});

export type ConfigFile = z.infer<typeof fileSchema>;

/** Parses and validates a file's text; errors name the file and the path of the offending value. */
export function parseConfigFile(text: string, fileName: string): DesiredConfig {
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (err) {
    throw new FloeError('config', `${fileName}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const r = fileSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.map(String).join('.') || 'the file';
    if (issue.code === 'unrecognized_keys') {
      throw new FloeError(
        'config',
        `${fileName}: ${where === 'the file' ? '' : `${where}: `}unknown key "${printable(issue.keys[0] ?? '')}"`,
        {
          hint: 'the file has sources, destinations and pipelines (docs/console.md)',
        },
      );
    }
    throw new FloeError(
      'config',
      `${fileName}: ${printable(where)}: ${issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message}`,
    );
  }
  const within = <T>(where: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof FloeError) throw new FloeError(err.kind, `${fileName}: ${where}: ${err.message}`, { hint: err.hint });
      throw err;
    }
  };
  const file = r.data;
  const sources = Object.entries(file.sources ?? {}).map(([name, s]) =>
    within(`source ${name}`, () =>
      ops.checkSourceInput({ name, url: s?.url ?? '', password: s?.password ?? null, options: s?.options ?? {} }),
    ),
  );
  const destinations = Object.entries(file.destinations ?? {}).map(([name, d]) =>
    within(`destination ${name}`, () => ops.checkDestinationInput({ name, ...d })),
  );
  const pipelines = Object.entries(file.pipelines ?? {}).map(([name, p]) =>
    within(`pipeline ${name}`, () => {
      const checked = ops.checkPipelineInput({ name, ...p });
      const known = (kind: 'source' | 'destination', n: string, list: { name: string }[]) => {
        if (!list.some((x) => x.name === n)) {
          throw new FloeError('config', `names ${kind} "${printable(n)}", which the file does not define`, {
            hint: `add it under ${kind}s:`,
          });
        }
      };
      known('source', p.source, sources);
      known('destination', p.destination, destinations);
      return { ...checked, status: p.status };
    }),
  );
  return { sources, destinations, pipelines };
}

export interface DesiredConfig {
  readonly sources: readonly ReturnType<typeof ops.checkSourceInput>[];
  readonly destinations: readonly ReturnType<typeof ops.checkDestinationInput>[];
  readonly pipelines: readonly (ReturnType<typeof ops.checkPipelineInput> & { status: 'START' | 'PAUSE' | undefined })[];
}

export type Step = {
  readonly op: 'create' | 'change' | 'remove' | 'unchanged';
  readonly kind: 'source' | 'destination' | 'pipeline';
  readonly name: string;
  readonly changes?: readonly string[];
};

/** What applying `desired` would do (removals only with `prune`). Throws for what cannot be applied. */
export async function planConfig(db: pg.ClientBase, desired: DesiredConfig, prune: boolean): Promise<Step[]> {
  const [sources, destinations, pipelines] = [await listSources(db), await listDestinations(db), await listPipelines(db)];
  const steps: Step[] = [];
  const diff = (pairs: [string, unknown, unknown][]) =>
    pairs.filter(([, a, b]) => !isDeepStrictEqual(canonical(a), canonical(b))).map(([k]) => k);

  for (const s of desired.sources) {
    const row = sources.find((r) => r.name === s.name);
    if (!row) steps.push({ op: 'create', kind: 'source', name: s.name });
    else {
      const changes = diff([
        ['url', row.url, s.url],
        ['password', row.password, s.password],
        ['options', row.options ?? {}, s.options],
      ]);
      steps.push(
        changes.length ? { op: 'change', kind: 'source', name: s.name, changes } : { op: 'unchanged', kind: 'source', name: s.name },
      );
    }
  }
  for (const d of desired.destinations) {
    const row = destinations.find((r) => r.name === d.name);
    if (!row) steps.push({ op: 'create', kind: 'destination', name: d.name });
    else {
      const changes = diff([
        ['type', row.type, d.type],
        ['url', row.url, d.url],
        ['secrets', row.secrets ?? {}, d.secrets],
        ['options', row.options ?? {}, d.options],
      ]);
      steps.push(
        changes.length
          ? { op: 'change', kind: 'destination', name: d.name, changes }
          : { op: 'unchanged', kind: 'destination', name: d.name },
      );
    }
  }
  const sourceName = new Map(sources.map((s) => [s.id, s.name]));
  const destinationName = new Map(destinations.map((d) => [d.id, d.name]));
  for (const p of desired.pipelines) {
    const row = pipelines.find((r) => r.name === p.name);
    if (!row) {
      const clash = pipelines.find((r) => r.slotName === p.slot);
      if (clash)
        throw new FloeError('config', `pipeline ${p.name}: slot "${p.slot}" is already used by pipeline ${clash.name}`, {
          hint: 'give it another slot',
        });
      steps.push({ op: 'create', kind: 'pipeline', name: p.name });
      continue;
    }
    if (row.deleteRequestedAt)
      throw new FloeError('config', `pipeline ${p.name} is being deleted`, { hint: 'apply again once a worker has removed it' });
    if (row.slotName !== p.slot) {
      throw new FloeError('config', `pipeline ${p.name}: its slot is ${row.slotName}, the file says ${p.slot}`, {
        hint: 'a slot is fixed for the life of a pipeline: remove the slot line, or delete and re-create the pipeline',
      });
    }
    const changes = diff([
      ['source', sourceName.get(row.sourceId), p.source],
      ['destination', destinationName.get(row.destinationId), p.destination],
      ['publication', row.publication, p.publication],
      ['options', row.options ?? {}, p.options],
      ['status', row.status, p.status ?? row.status],
    ]);
    steps.push(
      changes.length ? { op: 'change', kind: 'pipeline', name: p.name, changes } : { op: 'unchanged', kind: 'pipeline', name: p.name },
    );
  }
  if (prune) {
    for (const p of pipelines)
      if (!p.deleteRequestedAt && !desired.pipelines.some((x) => x.name === p.name))
        steps.push({ op: 'remove', kind: 'pipeline', name: p.name });
    for (const d of destinations)
      if (!desired.destinations.some((x) => x.name === d.name)) steps.push({ op: 'remove', kind: 'destination', name: d.name });
    for (const s of sources)
      if (!desired.sources.some((x) => x.name === s.name)) steps.push({ op: 'remove', kind: 'source', name: s.name });
  }
  return steps;
}

/** Carries out a plan inside the caller's transaction. */
export async function applyPlan(db: pg.ClientBase, desired: DesiredConfig, steps: readonly Step[]): Promise<void> {
  const find = <T extends { name: string }>(list: readonly T[], name: string) => list.find((x) => x.name === name)!;
  for (const step of steps) {
    if (step.op === 'unchanged' || step.op === 'remove') continue;
    if (step.kind === 'source') {
      const s = find(desired.sources, step.name);
      if (step.op === 'create') await ops.addSource(db, s);
      else await ops.updateSource(db, s);
    } else if (step.kind === 'destination') {
      const d = find(desired.destinations, step.name);
      const input = { name: d.name, type: d.type, url: d.url, secrets: d.secrets, options: d.options };
      if (step.op === 'create') await ops.addDestination(db, input);
      else await ops.updateDestination(db, input);
    }
  }
  for (const step of steps) {
    if (step.kind !== 'pipeline' || (step.op !== 'create' && step.op !== 'change')) continue;
    const p = find(desired.pipelines, step.name);
    if (step.op === 'create') {
      await ops.addPipeline(db, p, p.status === 'START');
      continue;
    }
    const row = (await findPipeline(db, p.name))!;
    const changes = step.changes ?? [];
    if (changes.includes('source') || changes.includes('destination')) {
      await db.query(
        `UPDATE floe.pipeline SET source_id = (SELECT id FROM floe.source WHERE name = $2), destination_id = (SELECT id FROM floe.destination WHERE name = $3) WHERE id = $1`,
        [row.id, p.source, p.destination],
      );
    }
    if (changes.includes('options') || changes.includes('publication'))
      await ops.replacePipelineOptions(db, p.name, p.options, p.publication);
    if (changes.includes('status')) await ops.pipelineAction(db, p.name, p.status === 'PAUSE' ? 'pause' : 'start');
  }
  // Removals last and in dependency order: pipelines, then what they used.
  for (const kind of ['pipeline', 'destination', 'source'] as const) {
    for (const step of steps) {
      if (step.op !== 'remove' || step.kind !== kind) continue;
      if (kind === 'pipeline') await ops.deletePipeline(db, step.name, false);
      else if (kind === 'destination') await ops.removeDestination(db, step.name);
      else await ops.removeSource(db, step.name);
    }
  }
}

export function formatPlan(steps: readonly Step[]): string {
  const mark = { create: '+', change: '~', remove: '-', unchanged: '=' } as const;
  const lines = steps.map(
    (s) =>
      `${mark[s.op]} ${s.kind} ${s.name}${s.op === 'change' ? ` (${s.changes!.join(', ')})` : s.op === 'unchanged' ? ' (unchanged)' : ''}`,
  );
  const count = (op: Step['op']) => steps.filter((s) => s.op === op).length;
  lines.push(
    `plan: ${count('create')} to create, ${count('change')} to change, ${count('remove')} to remove, ${count('unchanged')} unchanged`,
  );
  return lines.join('\n') + '\n';
}

/** The control plane as a file `floe apply` takes back unchanged (secrets as the references stored). */
export async function exportConfig(db: pg.ClientBase): Promise<string> {
  const [sources, destinations, pipelines] = [await listSources(db), await listDestinations(db), await listPipelines(db)];
  const sourceName = new Map(sources.map((s) => [s.id, s.name]));
  const destinationName = new Map(destinations.map((d) => [d.id, d.name]));
  const nonEmpty = (o: unknown) => (o && typeof o === 'object' && Object.keys(o).length > 0 ? { options: o } : {});
  const file = {
    sources: Object.fromEntries(
      sources.map((s) => [s.name, { url: s.url, ...(s.password ? { password: s.password } : {}), ...nonEmpty(s.options) }]),
    ),
    destinations: Object.fromEntries(
      destinations.map((d) => [
        d.name,
        { type: d.type, url: d.url, ...(d.secrets && Object.keys(d.secrets).length ? { secrets: d.secrets } : {}), ...nonEmpty(d.options) },
      ]),
    ),
    pipelines: Object.fromEntries(
      pipelines
        .filter((p) => !p.deleteRequestedAt)
        .map((p) => [
          p.name,
          {
            source: sourceName.get(p.sourceId),
            destination: destinationName.get(p.destinationId),
            publication: p.publication,
            slot: p.slotName,
            status: p.status,
            ...nonEmpty(p.options),
          },
        ]),
    ),
  };
  return `# floe configuration, written by floe export; apply with floe apply -f <file>\n${stringify(file)}`;
}

/** Key order does not make two objects different. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, x]) => [k, canonical(x)]),
    );
  return v;
}
