import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.ts';
import { isPostgresUrl, openDatabase } from '../db/index.ts';
import { formatAsReport, runAsConformance, type AsConformanceOptions, type ConformanceIdp } from './as-kit.ts';
import { idjagConformanceIdp } from './idjag-idp.ts';

/**
 * `npm run conformance -- as ...`: the conformance kit for Resource AS authors, on the terminal. idjag's side
 * (which database holds the signing key, which issuer the ID-JAGs name) comes from the same env as `npm start`
 * (DATABASE, ISSUER, PORT) or from --database / --idp-issuer. `--issuer` is the AS's issuer, as the issue
 * names it, so idjag's own issuer needs the other flag.
 *
 * Exit codes: 0 every required case passed, 1 a required case failed, 2 the kit could not run (usage, setup).
 */
const USAGE = `usage: npm run conformance -- as --token-endpoint URL --issuer ISSUER --client-id ID --client-secret SECRET
                                  [--resource URL] [--scope "a b"] [--subject SUB] [--email EMAIL] [--dpop]
                                  [--json] [--timeout SECONDS] [--database FILE|URL] [--idp-issuer URL]

  as                 check a Resource AS's JWT-bearer grant with valid and faulty ID-JAGs signed by idjag
  --token-endpoint   the AS's token endpoint
  --issuer           the AS's issuer identifier (the ID-JAG's aud)
  --client-id        the client's id at the AS (client_secret_basic; the ID-JAG's client_id)
  --client-secret    the client's secret at the AS
  --resource         the MCP server the tokens are for (the ID-JAG's resource and the request's)
  --scope            scopes the ID-JAG grants (default: the AS metadata's scopes_supported)
  --subject, --email the ID-JAG's sub (default idjag-conformance-kit) and email
  --dpop             also check ID-JAGs bound to the client's DPoP key (cnf.jkt): with a proof by that key,
                     without a proof, with another key's proof, and a proof presented twice
  --json             print the report as JSON instead of text
  --timeout          seconds to wait for each answer (default 15)
  --database         idjag's database, which holds its ID-JAG signing key (env DATABASE_URL or DATABASE, default ./data/idjag.db)
  --idp-issuer       idjag's issuer, the ID-JAG's iss (env ISSUER, default http://localhost:$PORT)

The AS must trust idjag's issuer and its JWKS ({idp-issuer}/jwks), and the client must be registered there.
Exit code 0: every required case passed; 1: a required case failed; 2: the kit could not run.`;

const flags = {
  'token-endpoint': { type: 'string' },
  issuer: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  resource: { type: 'string' },
  scope: { type: 'string' },
  subject: { type: 'string' },
  email: { type: 'string' },
  dpop: { type: 'boolean' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
  database: { type: 'string' },
  'idp-issuer': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** A command line the kit cannot run: exit 2 with the message and the usage, never a stack trace. */
class UsageError extends Error {}
/** A well-formed command whose idjag side is not there (no database, no key): exit 2, the message is enough. */
class SetupError extends Error {}

type Values = ReturnType<typeof parseCommandLine>['values'];

function parseCommandLine(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: flags, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

function required(values: Values, name: 'token-endpoint' | 'issuer' | 'client-id' | 'client-secret'): string {
  const value = values[name];
  if (!value) throw new UsageError(`--${name} is required`);
  return value;
}

function httpUrl(value: string, name: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`--${name} ${value} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UsageError(`--${name} must be an http(s) URL`);
  return value;
}

function timeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError('--timeout must be a positive number of seconds');
  return seconds * 1000;
}

/** The AS under test and how to address it, from the flags alone. */
function targetOptions(values: Values): Omit<AsConformanceOptions, 'idp'> {
  const resource = values.resource;
  if (resource !== undefined) httpUrl(resource, 'resource');
  const timeout = timeoutMs(values.timeout);
  return {
    tokenEndpoint: httpUrl(required(values, 'token-endpoint'), 'token-endpoint'),
    issuer: httpUrl(required(values, 'issuer'), 'issuer'),
    clientId: required(values, 'client-id'),
    clientSecret: required(values, 'client-secret'),
    ...(resource !== undefined ? { resource } : {}),
    ...(values.scope !== undefined ? { scope: values.scope } : {}),
    ...(values.subject !== undefined ? { subject: values.subject } : {}),
    ...(values.email !== undefined ? { email: values.email } : {}),
    ...(values.dpop ? { dpop: true } : {}),
    ...(timeout !== undefined ? { timeoutMs: timeout } : {}),
  };
}

/** idjag's side, settled as `npm start` settles it, so the kit signs with the key the running idjag publishes. */
function idjagSettings(values: Values, env: NodeJS.ProcessEnv): { database: string; issuer: string } {
  const args = [
    ...(values.database !== undefined ? ['--database', values.database] : []),
    ...(values['idp-issuer'] !== undefined ? ['--issuer', values['idp-issuer']] : []),
  ];
  try {
    const config = loadConfig(args, env);
    return { database: config.database, issuer: config.issuer ?? `http://localhost:${config.port}` };
  } catch (err) {
    throw new UsageError(err instanceof ConfigError ? err.message : String(err));
  }
}

/** Reads the key, never writes: a missing database is an error here, not something to create and seed. */
async function loadIdp(database: string, issuer: string): Promise<ConformanceIdp> {
  if (!isPostgresUrl(database) && database !== ':memory:' && !existsSync(database)) {
    throw new SetupError(`no idjag database at ${database}: start idjag once (npm start) or pass --database / DATABASE`);
  }
  const { db, close, location } = openDatabase(database);
  try {
    return await idjagConformanceIdp(db, issuer);
  } catch (err) {
    throw new SetupError(`cannot read idjag's ID-JAG signing key from ${location}: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await close();
  }
}

function write(text: string): Promise<void> {
  return new Promise((resolve) => process.stdout.write(`${text}\n`, () => resolve()));
}

async function run(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values, positionals } = parseCommandLine(argv);
  if (values.help) {
    await write(USAGE);
    return 0;
  }
  const [command, ...extra] = positionals;
  if (command !== 'as') throw new UsageError(command ? `unknown command ${command}; the kit has one: as` : 'a command is required: as');
  if (extra.length) throw new UsageError(`unexpected argument ${extra[0]}`);
  const target = targetOptions(values);
  const { database, issuer } = idjagSettings(values, env);
  const idp = await loadIdp(database, issuer);
  const report = await runAsConformance({ ...target, idp });
  await write(values.json ? JSON.stringify(report, null, 2) : formatAsReport(report));
  return report.ok ? 0 : 1;
}

run(process.argv.slice(2), process.env).then((code) => process.exit(code), (err) => {
  if (err instanceof UsageError) console.error(`${err.message}\n\n${USAGE}`);
  else if (err instanceof SetupError) console.error(err.message);
  else console.error(`the conformance kit failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
});
