import { z } from 'zod';

/**
 * RFC 9396 (rich authorization requests) as the token exchange reads it: `authorization_details` is a JSON
 * array of objects, each with a `type` that says how to read the rest. idjag checks the common fields of §2.2
 * where they appear, grants or drops whole objects by their `type` (a rule lists the types its client may be
 * granted), and copies the granted objects into the ID-JAG and the token response unchanged; what an object
 * means beyond its type is for the Resource AS that receives it.
 */

/** More objects than any real request needs; the body limit bounds the rest. */
export const MAX_DETAILS = 32;
/** Type-specific fields may nest; a JWT nested deeper than this helps nobody, and very deep JSON is a weapon. */
export const MAX_DEPTH = 16;

const Strings = z.array(z.string().max(2048)).max(100);

/** One authorization details object (RFC 9396 §2): `type` required, the common fields typed, the rest the type's own. */
export const AuthorizationDetail = z.looseObject({
  type: z.string({ error: (issue) => (issue.input === undefined ? 'type is required: a string naming the kind of authorization (RFC 9396 §2)' : 'type must be a string') })
    .min(1, 'type must not be empty').max(256, 'type is longer than 256 characters'),
  locations: Strings.optional(),
  actions: Strings.optional(),
  datatypes: Strings.optional(),
  identifier: z.string().max(2048).optional(),
  privileges: Strings.optional(),
});
export type AuthorizationDetail = z.infer<typeof AuthorizationDetail> & Record<string, unknown>;

const AuthorizationDetails = z.array(z.unknown())
  .min(1, 'an empty array asks for nothing: omit the parameter instead')
  .max(MAX_DETAILS, `at most ${MAX_DETAILS} objects`);

export type ParsedDetails = { ok: true; details: AuthorizationDetail[] } | { ok: false; description: string };

/** How deeply a JSON value nests (iteratively: the value may be hostile). */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    max = Math.max(max, depth);
    if (max > MAX_DEPTH) return max;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return max;
}

const where = (path: PropertyKey[]) => `authorization_details${path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')}`;

/** The parameter as RFC 9396 §2 defines it, or what is wrong with it, in words a client author can act on. */
export function parseAuthorizationDetails(raw: string): ParsedDetails {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false, description: 'authorization_details is not valid JSON; send a JSON array of objects, each with a type' };
  }
  if (!Array.isArray(json)) return { ok: false, description: 'authorization_details must be a JSON array of objects, each with a type' };
  const list = AuthorizationDetails.safeParse(json);
  if (!list.success) return { ok: false, description: `authorization_details: ${list.error.issues[0]!.message}` };
  if (depthOf(json) > MAX_DEPTH) return { ok: false, description: `authorization_details nests deeper than ${MAX_DEPTH} levels` };
  const details: AuthorizationDetail[] = [];
  for (const [i, item] of json.entries()) {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      return { ok: false, description: `${where([i])} is not an object; each element is an object with a type` };
    }
    const parsed = AuthorizationDetail.safeParse(item);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return { ok: false, description: `${where([i, ...issue.path])}: ${issue.message}` };
    }
    details.push(parsed.data as AuthorizationDetail);
  }
  return { ok: true, details };
}

/** The distinct types of these objects, in order. */
export const detailTypes = (details: readonly { type: string }[]): string[] => [...new Set(details.map((d) => d.type))];
