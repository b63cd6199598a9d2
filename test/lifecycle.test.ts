import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
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

/** A port free right now (the OS picks it), for a process that must be told its port before it starts. */
async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

function startProcess(args: string[]) {
  return spawn(process.execPath, ['src/main.ts', '--host', '127.0.0.1', '--log-level', 'warn', ...args], {
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A raw HTTP request: its status, headers and body, or `refused`, or `hung` when nothing came back in time. */
function probe(port: number, method: string, path: string, timeoutMs: number): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string } | 'refused' | 'hung'> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: false, headers: method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.setTimeout(timeoutMs, () => {
      req.destroy();
      resolve('hung');
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' ? 'refused' : 'hung'));
    req.end(method === 'POST' ? 'grant_type=client_credentials' : undefined);
  });
}

test('requests sent from the moment the process starts are answered or refused within seconds, never left hanging', async () => {
  const database = await createTestDatabase('idjag-start');
  const port = await freePort();
  const child = startProcess(['--port', String(port), '--database', database.location]);
  try {
    let started = false;
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => { if (line.includes('idjag is running at')) started = true; });
    const outcomes: Promise<Awaited<ReturnType<typeof probe>>>[] = [];
    const paths: [string, string][] = [['GET', '/healthz'], ['GET', '/.well-known/openid-configuration'], ['POST', '/token'], ['GET', '/readyz']];
    // a fresh database: migrations, keys and the seed take a while, which is the window that used to hang
    const deadline = Date.now() + 30_000;
    for (let i = 0; Date.now() < deadline; i++) {
      const [method, path] = paths[i % paths.length]!;
      outcomes.push(probe(port, method, path, 3000));
      if (started && i % paths.length === paths.length - 1) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(started).toBe(true);
    const results = await Promise.all(outcomes);
    expect(results.filter((r) => r === 'hung')).toEqual([]);
    const answered = results.filter((r) => typeof r === 'object');
    const starting = answered.filter((r) => r.status === 503);
    // the window existed, and what arrived in it was told to come back
    expect(starting.length).toBeGreaterThan(0);
    for (const r of starting) {
      expect(r.headers['retry-after']).toBe('1');
      expect(JSON.parse(r.body)).toEqual({ error: 'temporarily_unavailable', error_description: 'idjag is starting; retry shortly' });
    }
    const ready = await probe(port, 'GET', '/readyz', 3000);
    expect(ready).toMatchObject({ status: 200 });
    expect(JSON.parse((ready as { body: string }).body)).toEqual({ status: 'ready', database: 'ok', keys: 'ok' });
  } finally {
    child.kill('SIGKILL');
    await database.dispose();
  }
});

test('on SIGTERM the node reports not ready first, keeps serving while it drains, then exits', async () => {
  const database = await createTestDatabase('idjag-drain');
  const port = await freePort();
  const child = startProcess(['--port', String(port), '--database', database.location, '--drain-seconds', '2']);
  try {
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      lines.on('line', (line) => { if (line.includes('idjag is running at')) resolve(); });
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
    });
    expect(await probe(port, 'GET', '/readyz', 3000)).toMatchObject({ status: 200 });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const signalled = Date.now();
    child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const readyz = await probe(port, 'GET', '/readyz', 3000);
    expect(readyz).toMatchObject({ status: 503 });
    expect(JSON.parse((readyz as { body: string }).body)).toMatchObject({ status: 'draining' });
    const served = await probe(port, 'GET', '/.well-known/openid-configuration', 3000);
    expect(served).toMatchObject({ status: 200 });
    expect((served as { headers: Record<string, unknown> }).headers.connection).toBe('close');
    expect(await exited).toBe(0);
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(2000);
  } finally {
    child.kill('SIGKILL');
    await database.dispose();
  }
});
