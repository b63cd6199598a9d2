/**
 * An RFC 6749 §5.2 error answer. Every check of the demo Resource AS throws one of these, so the token route
 * has a single place that turns a failure into JSON and nothing a client sends can escape as a 500.
 */
export class OAuthError extends Error {
  readonly error: string;
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(error: string, description: string, status = 400, headers: Record<string, string> = {}) {
    super(description);
    this.error = error;
    this.status = status;
    this.headers = headers;
  }
}

/** The ID-JAG (or what it asks for) is unacceptable: RFC 7523 §3.1 and the draft §4.4 answer invalid_grant. */
export const invalidGrant = (description: string) => new OAuthError('invalid_grant', description);

export const invalidRequest = (description: string) => new OAuthError('invalid_request', description);

/** RFC 6749 §5.2: a failed Basic authentication answers 401 with the scheme the client must use. */
export const invalidClient = (description: string, realm: string) =>
  new OAuthError('invalid_client', description, 401, { 'WWW-Authenticate': `Basic realm="${realm}", charset="UTF-8"` });
