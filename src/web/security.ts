import type { Middleware } from 'koa';
import helmet from 'koa-helmet';

/**
 * Security headers on every response (helmet): a CSP that allows no inline script and no framing,
 * no Referer (URLs here carry codes and state), HSTS only when the issuer is https.
 *
 * No `form-action`: browsers apply it to the redirects that follow a form post, and the login form's answer
 * is a redirect chain that ends at the client's redirect_uri, which is another origin.
 */
export function securityHeaders(opts: { https: boolean }): Middleware {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        frameAncestors: ["'none'"],
      },
    },
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: opts.https ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    crossOriginEmbedderPolicy: false,
  }) as unknown as Middleware;
}
