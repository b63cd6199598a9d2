import { parseArgs } from 'node:util';
import { DemoFlowError, parseConformanceContext, runConformanceClient, runDemoClient } from './client.ts';

const USAGE = `usage: npm run demo:client [-- options]
       npm run demo:client -- --conformance <mcp server url>

  --issuer <url>      the IdP (default: $ISSUER, else http://localhost:3000)
  --mcp <url>         the MCP server (default: {issuer}/demo/mcp)
  --username <name>   sign in through the login form instead of the browser (with --password)
  --password <pw>
  --todo <text>       the todo to add
  --dpop              prove possession of a DPoP key (RFC 9449) at every step: the IdP binds the ID-JAG to
                      it (cnf.jkt), the Resource AS requires a proof by that key and binds the access token,
                      and the MCP server takes it only as "Authorization: DPoP" with a proof per request
  --conformance       steps 2-4 only, as the MCP conformance suite runs a client
                      (scenario auth/cross-app-access-complete-flow): step 1's ID Token, the IdP's token
                      endpoint and the client's credentials come from $MCP_CONFORMANCE_CONTEXT (JSON), the
                      MCP server URL is the last argument; step 4 lists its tools
  --help`;

/**
 * `npm run demo:client`: the whole flow against a running idjag (`npm start`), printed step by step.
 * With `--conformance`, the command the MCP conformance suite runs: `<command> <mcp server url>`.
 */
async function main(): Promise<number> {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      options: {
        issuer: { type: 'string' },
        mcp: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        todo: { type: 'string' },
        dpop: { type: 'boolean' },
        conformance: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.conformance && values.dpop) {
    console.error(`--dpop is for the demo run; the conformance scenario runs without DPoP\n\n${USAGE}`);
    return 2;
  }
  if (values.conformance) return conformance(positionals);
  if (positionals.length) {
    console.error(`unexpected argument ${positionals[0]} (the MCP server is --mcp <url>; a bare URL only with --conformance)\n\n${USAGE}`);
    return 2;
  }
  const issuer = values.issuer ?? process.env.ISSUER ?? 'http://localhost:3000';
  try {
    await runDemoClient({
      issuer, mcpUrl: values.mcp, username: values.username, password: values.password, todo: values.todo, dpop: values.dpop,
      log: (line) => console.log(line),
    });
    return 0;
  } catch (err) {
    if (err instanceof DemoFlowError) {
      console.error(`\n${err.message}`);
      if (/fetch failed|ECONNREFUSED/.test(err.message)) console.error(`Is idjag running at ${issuer}? Start it with npm start.`);
      return 1;
    }
    throw err;
  }
}

/** `--conformance <mcp server url>`: the trace on stdout, the verdict on stderr, exit 0 only if step 4 succeeded. */
async function conformance(positionals: string[]): Promise<number> {
  const mcpUrl = positionals.at(-1);
  if (positionals.length !== 1 || !mcpUrl || !URL.canParse(mcpUrl)) {
    console.error(`--conformance takes exactly one argument, the MCP server's URL (got ${positionals.length ? positionals.join(' ') : 'none'})\n\n${USAGE}`);
    return 2;
  }
  try {
    const context = parseConformanceContext(process.env.MCP_CONFORMANCE_CONTEXT);
    const result = await runConformanceClient(context, mcpUrl, { log: (line) => console.log(line) });
    console.error(`conformance client: steps 2-4 passed against ${mcpUrl} (${result.tools.length} tool(s) listed with the access token)`);
    return 0;
  } catch (err) {
    if (err instanceof DemoFlowError) {
      console.error(`\nconformance client failed: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

main().then((code) => process.exit(code), (err) => {
  console.error('demo client crashed:', err);
  process.exit(1);
});
