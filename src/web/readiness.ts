import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';

export type Phase = 'starting' | 'ready' | 'draining';

/** Seconds a client (or a load balancer) is told to wait while the node starts. */
const STARTING_RETRY_AFTER = 1;

/**
 * The node's request listener from the moment its socket is bound. The socket is bound first, so the
 * issuer can name the port actually bound, and the app is built after that (migrations, keys, seed). A
 * request that arrives meanwhile is answered at once, `503` with `Retry-After`, never left hanging. Once the
 * node is draining (SIGTERM), `/readyz` says so and every response closes its connection, so a load
 * balancer stops sending and keep-alive clients reconnect elsewhere, while in-flight work finishes.
 */
export class Readiness {
  #phase: Phase = 'starting';
  #app: RequestListener | undefined;

  get phase(): Phase {
    return this.#phase;
  }

  readonly listener: RequestListener = (req, res) => {
    if (!this.#app) return notYet(req, res);
    if (this.#phase === 'draining') res.setHeader('Connection', 'close');
    return this.#app(req, res);
  };

  serve(app: RequestListener): void {
    this.#app = app;
    this.#phase = 'ready';
  }

  drain(): void {
    this.#phase = 'draining';
  }
}

function notYet(req: IncomingMessage, res: ServerResponse) {
  req.resume();
  res.writeHead(503, {
    'Retry-After': String(STARTING_RETRY_AFTER),
    'Cache-Control': 'no-store',
    'Content-Type': 'application/json; charset=utf-8',
    Connection: 'close',
  });
  res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'idjag is starting; retry shortly' }));
}
