import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createTestDatabase } from './helpers/database.ts';

/** `npm start` as a real process: it prints where it runs, serves, and shuts down cleanly on SIGTERM and SIGINT. */
test.each(['SIGTERM', 'SIGINT'] as const)('the server process stops cleanly on %s', async (signal) => {
  const database = await createTestDatabase('idjag-proc');
  const child = spawn(process.execPath, ['src/main.ts', '--port', '0', '--host', '127.0.0.1', '--log-level', 'info', '--database', database.location], {
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const lines = createInterface({ input: child.stdout! });
    const issuer = await new Promise<string>((resolve, reject) => {
      lines.on('line', (line) => {
        const m = /idjag is running at (\S+)/.exec(line);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
    });
    expect(issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${issuer}/healthz`);
    expect(health.status).toBe(200);
    const logs: string[] = [];
    lines.on('line', (l) => logs.push(l));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    expect(await exited).toBe(0);
    expect(logs.some((l) => l.includes('shutting down'))).toBe(true);
    // the request log names the path and never a query string
    expect(logs.join('\n')).not.toMatch(/"path":"[^"]*\?/);
  } finally {
    child.kill('SIGKILL');
    await database.dispose();
  }
});
