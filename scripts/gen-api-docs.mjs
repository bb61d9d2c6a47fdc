#!/usr/bin/env node
// Writes docs/api.md, the API reference, from openapi.json, which is the single source of truth.
// `--check` writes nothing: it exits 1 if docs/api.md differs from what would be written.
//   node scripts/gen-api-docs.mjs          regenerate after editing openapi.json
//   node scripts/gen-api-docs.mjs --check  fail when someone forgot to
// No dependencies: only local `#/components/...` references are followed.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SPEC_PATH = join(ROOT, 'openapi.json');
const OUT_PATH = join(ROOT, 'docs', 'api.md');
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

const spec = JSON.parse(readFileSync(SPEC_PATH, 'utf8'));

// ---------------------------------------------------------------- references
function lookup(ref) {
  if (!ref.startsWith('#/')) throw new Error(`only local references are supported: ${ref}`);
  let node = spec;
  for (const part of ref.slice(2).split('/')) {
    node = node?.[part.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  if (node === undefined) throw new Error(`unresolved reference ${ref}`);
  return node;
}

const refName = (node) => node?.$ref?.split('/').pop();

/** The node a `$ref` points at, with the reference's own members (description…) on top. */
function deref(node) {
  if (!node?.$ref) return node;
  const { $ref, ...own } = node;
  return { ...deref(lookup($ref)), ...own };
}

/** A schema with `allOf` folded into one object schema (properties and required merged). */
function flatten(schema) {
  const s = deref(schema);
  if (!s.allOf) return s;
  const out = { ...s, type: 'object', properties: {}, required: [] };
  delete out.allOf;
  for (const part of s.allOf) {
    const p = flatten(part);
    Object.assign(out.properties, p.properties ?? {});
    out.required.push(...(p.required ?? []));
  }
  return out;
}

// Named object schemas are documented once, under "Objects", and linked to; request bodies and
// scalar or enum schemas are shown inline where they are used.
const schemas = spec.components?.schemas ?? {};
function isObjectSchema(name) {
  const s = schemas[name];
  return Boolean(s) && !name.endsWith('Request') && (Boolean(s.allOf) || (s.type === 'object' && Boolean(s.properties)));
}

// ---------------------------------------------------------------- markdown helpers
const slug = (text) => text.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
const code = (v) => `\`${v}\``;
const cell = (text) => String(text ?? '').replace(/\|/g, '\\|').replace(/\n\n/g, '<br><br>').replace(/\n/g, ' ');
const sentence = (text) => (!text ? '' : /[.!?:)]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

function table(head, rows) {
  if (rows.length === 0) return '';
  const line = (cells) => `| ${cells.map(cell).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------- schemas as text
function typeText(node) {
  const name = refName(node);
  if (name && isObjectSchema(name)) return `[${name}](#${slug(name)})`;
  const s = deref(node);
  if (s.allOf) return 'object';
  const union = s.oneOf ?? s.anyOf;
  if (union) return [...new Set(union.map(typeText))].join(' or ');
  if (s.const !== undefined) return code(JSON.stringify(s.const));
  const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
  if (types.length === 0) return 'any';
  return types.map((t) => (t === 'array' ? `${s.items ? typeText(s.items) : 'any'}[]` : t)).join(' or ');
}

function range(min, max, unit) {
  const units = (n) => (unit && n === 1 ? unit.replace(/s$/, '') : unit);
  if (min !== undefined && max !== undefined) return `${min}–${max} ${units(max)}`;
  if (max !== undefined) return `at most ${max} ${units(max)}`;
  if (min !== undefined) return `at least ${min} ${units(min)}`;
  return '';
}

function constraints(node) {
  const s = deref(node);
  const parts = [];
  const values = (s.enum ?? []).filter((v) => v !== null);
  if (values.length) parts.push(`One of ${values.map(code).join(', ')}`);
  parts.push(range(s.minLength, s.maxLength, 'characters'));
  if (s.minimum !== undefined || s.maximum !== undefined) parts.push(range(s.minimum, s.maximum, '').trim());
  parts.push(range(s.minItems, s.maxItems, 'items'));
  parts.push(range(s.minProperties, s.maxProperties, 'entries'));
  if (s.pattern) parts.push(`Pattern ${code(s.pattern)}`);
  if (s.default !== undefined) parts.push(`Default ${code(JSON.stringify(s.default))}`);
  return parts.filter(Boolean).map((p) => sentence(p.charAt(0).toUpperCase() + p.slice(1))).join(' ');
}

function describe(node) {
  // The reference's own description wins over the target's (as in OpenAPI 3.1).
  const own = node?.$ref ? node.description : undefined;
  const text = own ?? deref(node).description;
  return [sentence(text), constraints(node)].filter(Boolean).join(' ');
}

/** Rows for every property, descending into inline objects and arrays of inline objects. */
function fieldRows(schema, { withRequired }, prefix = '', rows = []) {
  const s = flatten(schema);
  const required = new Set(s.required ?? []);
  for (const [name, prop] of Object.entries(s.properties ?? {})) {
    const full = prefix + name;
    const isRequired = required.has(name);
    const text = describe(prop);
    rows.push(withRequired
      ? [code(full), typeText(prop), isRequired ? 'yes' : '', text]
      : [code(full), typeText(prop), isRequired ? text : ['Not always present.', text].filter(Boolean).join(' ')]);
    if (!prop.$ref) {
      // An inline object, possibly nullable (`oneOf: [{type: object…}, {type: null}]`).
      const inline = [prop, ...(prop.oneOf ?? prop.anyOf ?? [])].find((x) => !x.$ref && x.type === 'object' && x.properties);
      if (inline) fieldRows(inline, { withRequired }, `${full}.`, rows);
      if (prop.type === 'array' && prop.items && !prop.items.$ref && prop.items.properties) {
        fieldRows(prop.items, { withRequired }, `${full}[].`, rows);
      }
    }
  }
  return rows;
}

const fieldsTable = (schema) => table(['Field', 'Type', 'Description'], fieldRows(schema, { withRequired: false }));

function bodyText(schema) {
  const name = refName(schema);
  if (name && isObjectSchema(name)) return `${/^[AEIOU]/.test(name) ? 'An' : 'A'} [${name}](#${slug(name)}).`;
  const s = flatten(schema);
  if (!s.properties) return `${s.description ? sentence(s.description) : 'A JSON object.'}`;
  return [s.description ? sentence(s.description) : '', fieldsTable(schema)].filter(Boolean).join('\n\n');
}

// ---------------------------------------------------------------- operations
function auth(op) {
  const security = op.security ?? spec.security ?? [];
  if (security.length === 0 || security.every((r) => Object.keys(r).length === 0)) return 'none: this route is public.';
  const schemes = [...new Set(security.flatMap(Object.keys))];
  const parts = schemes.map((scheme) => {
    const scopes = security.flatMap((r) => r[scheme] ?? []);
    if (scheme === 'adminToken') return "the operator's `ADMIN_TOKEN` as bearer token";
    if (scopes.length === 0) return `\`${scheme}\``;
    return scopes.length === 1
      ? `an API key with the ${code(scopes[0])} scope`
      : `an API key with any of the scopes ${scopes.map(code).join(', ')}`;
  });
  return `${parts.join(', or ')}.`;
}

function operationSection(method, path, op, pathParams = []) {
  const out = [`### ${code(`${method.toUpperCase()} ${path}`)}`, '', `**${sentence(op.summary)}**`, ''];
  if (op.description) out.push(op.description, '');
  out.push(`**Needs:** ${auth(op)}`, '');

  const params = [...pathParams, ...(op.parameters ?? [])].map(deref);
  if (params.length) {
    out.push('**Parameters**', '', table(['Name', 'In', 'Type', 'Required', 'Description'],
      params.map((p) => [code(p.name), p.in, typeText(p.schema), p.required ? 'yes' : '', [sentence(p.description), constraints(p.schema)].filter(Boolean).join(' ')])), '');
  }

  // A JSON body if the call takes one, else its one other media type (a form, a raw message).
  const contents = Object.entries((op.requestBody && deref(op.requestBody).content) ?? {});
  const [bodyType, media] = contents.find(([type]) => type === 'application/json') ?? contents[0] ?? [];
  if (media && !deref(media.schema).properties && !deref(media.schema).allOf) {
    out.push(`**Body** (${code(bodyType)})${deref(op.requestBody).required ? '' : ', optional'}. ${sentence(deref(media.schema).description)}`.trim(), '');
  } else if (media) {
    const body = flatten(media.schema);
    out.push(`**Body** (${code(bodyType)})${deref(op.requestBody).required ? '' : ', optional'}`, '');
    if (body.description) out.push(sentence(body.description), '');
    out.push(table(['Field', 'Type', 'Required', 'Description'], fieldRows(media.schema, { withRequired: true })), '');
    if (media.example) out.push('```json', JSON.stringify(media.example, null, 2), '```', '');
  }

  const codes = Object.keys(op.responses ?? {}).sort();
  for (const status of codes.filter((c) => c.startsWith('2'))) {
    const r = deref(op.responses[status]);
    const headers = Object.keys(r.headers ?? {}).map(code).join(', ');
    out.push(`**Answer:** ${code(status)}. ${sentence(r.description)}${headers ? ` Headers: ${headers}.` : ''}`, '');
    for (const [type, media] of Object.entries(r.content ?? {})) {
      if (type === 'application/json') {
        if (media.schema) out.push(bodyText(media.schema), '');
      } else {
        out.push(`Body: ${code(type)}. ${sentence(media.schema ? deref(media.schema).description : '')}`.trim(), '');
      }
    }
  }

  const errors = codes.filter((c) => !c.startsWith('2')).map((status) => {
    const r = deref(op.responses[status]);
    const retry = r.headers?.['Retry-After'] && !r.description.includes('Retry-After') ? ' With `Retry-After`.' : '';
    return [code(status), `${r.description}${retry}`];
  });
  if (errors.length) out.push('**Errors**', '', table(['Status', 'Code: when'], errors), '');
  return out.join('\n');
}

function objectSection(name) {
  const s = schemas[name];
  const out = [`### ${name}`, ''];
  const base = s.allOf?.find((p) => p.$ref && isObjectSchema(refName(p)));
  if (base) {
    if (s.description) out.push(sentence(s.description), '');
    const extra = { type: 'object', properties: {}, required: [] };
    for (const part of s.allOf.filter((p) => p !== base)) {
      const f = flatten(part);
      Object.assign(extra.properties, f.properties ?? {});
      extra.required.push(...(f.required ?? []));
    }
    out.push(`Every field of [${refName(base)}](#${slug(refName(base))}), and:`, '', fieldsTable(extra), '');
  } else {
    if (s.description) out.push(sentence(s.description), '');
    out.push(fieldsTable(s), '');
  }
  return out.join('\n');
}

// ---------------------------------------------------------------- the page
function render() {
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths ?? {})) {
    for (const method of METHODS) if (item[method]) ops.push({ method, path, op: item[method], pathParams: item.parameters ?? [] });
  }
  const tagOrder = (spec.tags ?? []).map((t) => t.name);
  for (const { op } of ops) for (const t of op.tags ?? ['Other']) if (!tagOrder.includes(t)) tagOrder.push(t);

  const out = [
    '<!-- Generated from openapi.json by scripts/gen-api-docs.mjs. Do not edit: change openapi.json, then run `node scripts/gen-api-docs.mjs`. -->',
    '',
    `# ${spec.info.title} reference`,
    '',
    `Version ${spec.info.version}. The machine-readable form of this page is [\`openapi.json\`](../openapi.json), which the worker also serves at \`GET /openapi.json\`.`,
    '',
    spec.info.description ?? '',
    '',
    '## Routes',
    '',
    table(['Call', 'What it does', 'Needs'], ops.map(({ method, path, op }) => {
      const title = `${method.toUpperCase()} ${path}`;
      const needs = auth(op).replace(/\.$/, '').replace('an API key with the ', '').replace('an API key with any of the scopes ', 'any of ');
      return [`[${code(title)}](#${slug(title)})`, op.summary ?? '', needs];
    })),
    '',
  ];
  for (const tag of tagOrder) {
    const inTag = ops.filter(({ op }) => (op.tags ?? ['Other']).includes(tag));
    if (inTag.length === 0) continue;
    const about = (spec.tags ?? []).find((t) => t.name === tag)?.description;
    out.push(`## ${tag}`, '');
    if (about) out.push(sentence(about), '');
    for (const { method, path, op, pathParams } of inTag) out.push(operationSection(method, path, op, pathParams));
  }
  out.push('## Objects', '', 'The objects that answers are made of.', '');
  for (const name of Object.keys(schemas).filter(isObjectSchema)) out.push(objectSection(name));
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trim()}\n`;
}

const page = render();
if (process.argv.includes('--check')) {
  const current = existsSync(OUT_PATH) ? readFileSync(OUT_PATH, 'utf8') : '';
  if (current !== page) {
    console.error('docs/api.md is out of date with openapi.json: run `node scripts/gen-api-docs.mjs`');
    process.exit(1);
  }
  console.log('docs/api.md is up to date');
} else {
  writeFileSync(OUT_PATH, page);
  console.log(`wrote ${OUT_PATH.slice(ROOT.length + 1)}`);
}
