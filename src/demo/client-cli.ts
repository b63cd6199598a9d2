import { parseArgs } from 'node:util';
import { DemoFlowError, runDemoClient } from './client.ts';

const USAGE = `usage: npm run demo:client [-- options]

  --issuer <url>      the IdP (default: $ISSUER, else http://localhost:3000)
  --mcp <url>         the MCP server (default: {issuer}/demo/mcp)
  --username <name>   sign in through the login form instead of the browser (with --password)
  --password <pw>
  --todo <text>       the todo to add
  --help`;

/** `npm run demo:client`: the whole flow against a running idjag (`npm start`), printed step by step. */
async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        issuer: { type: 'string' },
        mcp: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        todo: { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const issuer = values.issuer ?? process.env.ISSUER ?? 'http://localhost:3000';
  try {
    await runDemoClient({
      issuer, mcpUrl: values.mcp, username: values.username, password: values.password, todo: values.todo,
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

main().then((code) => process.exit(code), (err) => {
  console.error('demo client crashed:', err);
  process.exit(1);
});
