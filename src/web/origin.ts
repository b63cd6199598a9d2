import type Koa from 'koa';

/**
 * Every URL the IdP writes (discovery documents, redirects, form actions) is built by oidc-provider and koa
 * from the request's host and protocol. Those come from the Host, X-Forwarded-Host and X-Forwarded-Proto
 * headers, or from an absolute request target, all of which the client chooses; a forged one would point
 * discovery at another origin. Pin them to the configured issuer instead, whatever the request says. (The
 * `proxy` setting still decides whether X-Forwarded-For names the client's address.)
 */
export function pinOrigin(app: Koa, issuer: string): void {
  const url = new URL(issuer);
  const protocol = url.protocol.slice(0, -1);
  const { host, hostname, origin } = url;
  Object.defineProperties(app.request, {
    protocol: { get: () => protocol },
    secure: { get: () => protocol === 'https' },
    host: { get: () => host },
    hostname: { get: () => hostname },
    origin: { get: () => origin },
    href: {
      get(this: Koa.Request) {
        // an absolute-form request target (GET http://other.example/x) keeps only its path and query
        const target = /^[a-z][a-z0-9+.-]*:\/\//i.test(this.originalUrl) ? pathAndQuery(this.originalUrl) : this.originalUrl;
        return origin + target;
      },
    },
  });
}

function pathAndQuery(absolute: string): string {
  try {
    const u = new URL(absolute);
    return u.pathname + u.search;
  } catch {
    return '/';
  }
}
