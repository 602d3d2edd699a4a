/** The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json. Kept beside the routes (server.ts). */
import { PIPELINE_OPTION_NAMES } from '../control/config.js';
import { BINARY_MODES } from '../postgres/replication.js';
import { PIPELINE_ACTIONS } from './operations.js';

/** Pipeline options that take words; the others are integers. */
const ENUM_OPTIONS: Partial<Record<string, readonly string[]>> = { delete_mode: ['hard', 'soft'], binary: BINARY_MODES };

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const errors = {
  '400': { description: 'invalid request (nothing was changed)', ...json(ref('Error')) },
  '401': { description: 'missing or wrong token', ...json(ref('Error')) },
  '403': { description: 'cross-site request refused', ...json(ref('Error')) },
  '404': { description: 'no such source, destination or pipeline', ...json(ref('Error')) },
  '409': { description: 'conflicts with what exists (name taken, still in use)', ...json(ref('Error')) },
};
const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string' } };

export function openApiDocument(): object {
  return {
    openapi: '3.1.0',
    info: {
      title: 'floe API',
      version: '1',
      description:
        'Sources, destinations and pipelines of the floe control plane, their status, and actions on them. ' +
        'Every request but this document needs `Authorization: Bearer <FLOE_API_TOKEN>` (reads may be public with ' +
        '--console-public-read). Secrets appear only as references (env:NAME, file:/path, enc:v2:(encrypted)). ' +
        'Errors: `{"error": {"kind", "message", "hint"}}`.',
    },
    security: [{ bearer: [] }],
    paths: {
      '/api/v1/status': { get: { summary: 'every pipeline and worker, as floe status --json', responses: { '200': json(ref('Status')) } } },
      '/api/v1/sources': {
        get: {
          summary: 'list sources',
          responses: { '200': json({ type: 'object', properties: { sources: { type: 'array', items: ref('Source') } } }) },
        },
        post: { summary: 'add a source', requestBody: json(ref('SourceInput')), responses: { '201': json(ref('Source')), ...errors } },
      },
      '/api/v1/sources/{name}': {
        parameters: [nameParam],
        get: { summary: 'one source', responses: { '200': json(ref('Source')), ...errors } },
        put: {
          summary: 'change a source (its pipelines restart)',
          requestBody: json(ref('SourceInput')),
          responses: { '200': json(ref('Source')), ...errors },
        },
        delete: { summary: 'remove a source no pipeline uses', responses: { '204': { description: 'removed' }, ...errors } },
      },
      '/api/v1/destinations': {
        get: {
          summary: 'list destinations',
          responses: { '200': json({ type: 'object', properties: { destinations: { type: 'array', items: ref('Destination') } } }) },
        },
        post: {
          summary: 'add a destination',
          requestBody: json(ref('DestinationInput')),
          responses: { '201': json(ref('Destination')), ...errors },
        },
      },
      '/api/v1/destinations/{name}': {
        parameters: [nameParam],
        get: { summary: 'one destination', responses: { '200': json(ref('Destination')), ...errors } },
        put: {
          summary: 'change a destination (its pipelines restart)',
          requestBody: json(ref('DestinationInput')),
          responses: { '200': json(ref('Destination')), ...errors },
        },
        delete: { summary: 'remove a destination no pipeline uses', responses: { '204': { description: 'removed' }, ...errors } },
      },
      '/api/v1/pipelines': {
        get: {
          summary: 'every pipeline with its status',
          responses: { '200': json({ type: 'object', properties: { pipelines: { type: 'array', items: ref('PipelineStatus') } } }) },
        },
        post: {
          summary: 'add a pipeline (paused unless start is true)',
          requestBody: json(ref('PipelineInput')),
          responses: { '201': json(ref('Pipeline')), ...errors },
        },
      },
      '/api/v1/pipelines/{name}': {
        parameters: [nameParam],
        get: {
          summary: 'one pipeline: status, options, tables, last hour of figures, alerts',
          responses: { '200': json(ref('Pipeline')), ...errors },
        },
        patch: {
          summary: 'change options or publication (the pipeline restarts with them)',
          requestBody: json({
            type: 'object',
            additionalProperties: false,
            properties: {
              options: ref('PipelineOptions'),
              reset: { type: 'array', items: { type: 'string' } },
              publication: { type: 'string' },
            },
          }),
          responses: { '200': json(ref('Pipeline')), ...errors },
        },
        delete: {
          summary: 'delete a pipeline; drop_slot=true lets a worker drop its replication slot first',
          parameters: [{ name: 'drop_slot', in: 'query', schema: { type: 'string', enum: ['true', 'false'] } }],
          responses: { '202': { description: 'delete requested (drop_slot)' }, '204': { description: 'deleted' }, ...errors },
        },
      },
      '/api/v1/pipelines/{name}/actions': {
        parameters: [nameParam],
        post: {
          summary: 'pause, resume, or resync/skip/unskip one table',
          requestBody: json({
            type: 'object',
            required: ['action'],
            additionalProperties: false,
            properties: {
              action: { type: 'string', enum: PIPELINE_ACTIONS },
              table: { type: 'string', description: 'schema.table (resync, skip, unskip)' },
            },
          }),
          responses: { '202': { description: 'requested; workers act within seconds' }, ...errors },
        },
      },
      '/api/v1/monitor/sources': {
        get: {
          summary: "the WAL monitor's latest check of each source this worker watches",
          responses: { '200': { description: 'thresholds and sources' } },
        },
      },
      '/api/v1/alerts': {
        get: { summary: 'recent WAL alerts raised by this worker, newest first', responses: { '200': { description: 'alerts' } } },
      },
      '/api/v1/session': {
        get: { summary: 'whether this console needs a token and whether it is read-only (no token needed)', security: [] },
      },
      '/api/v1/openapi.json': { get: { summary: 'this document', security: [] } },
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          properties: {
            error: {
              type: 'object',
              required: ['kind', 'message'],
              properties: { kind: { type: 'string' }, message: { type: 'string' }, hint: { type: ['string', 'null'] } },
            },
          },
        },
        SecretReference: { type: 'string', description: 'env:NAME, file:/path or enc:v2:... (floe secret encrypt); never the secret' },
        SourceInput: {
          type: 'object',
          required: ['name', 'url'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', pattern: '^[a-z0-9_]{1,58}$' },
            url: { type: 'string', description: 'postgres://user@host:5432/db, without a password' },
            password: { oneOf: [ref('SecretReference'), { type: 'null' }] },
            options: { type: 'object', properties: { connect_timeout_ms: { type: 'integer' } }, additionalProperties: false },
          },
        },
        Source: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            url: { type: 'string' },
            password: { type: ['string', 'null'] },
            options: { type: 'object' },
            pipelines: { type: 'array', items: { type: 'string' } },
          },
        },
        DestinationInput: {
          type: 'object',
          required: ['name', 'type'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', pattern: '^[a-z0-9_]{1,58}$' },
            type: { type: 'string', enum: ['duckdb', 'snowflake'] },
            path: { type: 'string', description: 'duckdb: the database file' },
            url: { type: 'string', description: 'duckdb:/path or snowflake://user@account/db/schema?warehouse=..., without secrets' },
            secrets: { type: 'object', additionalProperties: ref('SecretReference') },
            options: { type: 'object' },
          },
        },
        Destination: {
          type: 'object',
          properties: {
            name: { type: 'string' },
            type: { type: 'string' },
            url: { type: 'string' },
            secrets: { type: 'object', additionalProperties: { type: 'string' } },
            options: { type: 'object' },
            pipelines: { type: 'array', items: { type: 'string' } },
          },
        },
        PipelineOptions: {
          type: 'object',
          additionalProperties: false,
          properties: Object.fromEntries(
            PIPELINE_OPTION_NAMES.map((n) => [n, ENUM_OPTIONS[n] ? { type: 'string', enum: ENUM_OPTIONS[n] } : { type: 'integer' }]),
          ),
        },
        PipelineInput: {
          type: 'object',
          required: ['name', 'source', 'destination', 'publication'],
          additionalProperties: false,
          properties: {
            name: { type: 'string', pattern: '^[a-z0-9_]{1,58}$' },
            source: { type: 'string' },
            destination: { type: 'string' },
            publication: { type: 'string' },
            slot: { type: 'string', pattern: '^[a-z0-9_]{1,63}$' },
            options: ref('PipelineOptions'),
            start: { type: 'boolean' },
          },
        },
        PipelineStatus: { type: 'object', description: 'an entry of floe status --json (docs/operations.md)' },
        Pipeline: {
          allOf: [
            ref('PipelineStatus'),
            {
              type: 'object',
              properties: {
                options: ref('PipelineOptions'),
                table_states: { type: 'array', items: { type: 'object' } },
                history: {
                  type: 'array',
                  items: { type: 'object', description: 't, lag_bytes, lag_seconds, retained_wal_bytes, throughput_bytes_per_second' },
                },
                alerts: { type: 'array', items: { type: 'object' } },
              },
            },
          ],
        },
        Status: {
          type: 'object',
          properties: { pipelines: { type: 'array', items: ref('PipelineStatus') }, workers: { type: 'array', items: { type: 'object' } } },
        },
      },
    },
  };
}
