/**
 * The demo's development credentials, as seed/seed.json registers them. Two parties, two identities: the
 * same agent is `demo-agent` at the IdP and `demo-agent-at-todo` at the demo Resource AS (the IdP's policy
 * rule maps one to the other, into the ID-JAG's `client_id`).
 */
export const DEMO_AGENT = { clientId: 'demo-agent', clientSecret: 'demo-agent-secret', redirectUri: 'http://127.0.0.1:8976/callback' } as const;

export const DEMO_AS_CLIENT = { clientId: 'demo-agent-at-todo', clientSecret: 'demo-agent-at-todo-secret' } as const;
