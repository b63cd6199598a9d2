import { LRUCache } from 'lru-cache';
import type { ExchangeLookup, ExchangeQuery, McpServerRecord, ResourceServerFacts } from '../db/catalog.ts';
import type { Counters } from '../db/counters.ts';
import type { Member } from '../db/users.ts';
import type { Rule } from '../policy/index.ts';

/**
 * What token exchanges read, kept between them while the data cannot have changed. Every change to the users,
 * their groups and aud_subs raises the `directory` counter, every change to the Resource ASes, their aliases,
 * the MCP servers and the rules raises `catalog`, in the same transaction (database triggers,
 * migrations/0015_change_counters.ts); an exchange reads both counters with its client (one statement the
 * provider makes anyway, src/exchange/read-ahead.ts). While a counter is what it was, what was read under it
 * is still what the database holds; when it moves, that part is dropped and read again. So an exchange sees
 * every change committed before its request was read, as when it read everything itself, on every worker and
 * node sharing the database; a disabled user or rule stops the very next exchange.
 *
 * Per process, bounded: an enterprise's active users and its few targets. Only what an exchange can issue with
 * is kept (a known user, a known Resource AS with all the resources asked for); refusals read every time.
 */

/** The user's part of a lookup. */
interface Directory { member: Member | undefined; audSub: string | undefined }
/** The target's part: the Resource AS, the MCP servers asked for, the client's candidate rules there. */
interface Target { resourceServer: ResourceServerFacts | undefined; mcpServers: McpServerRecord[]; rules: Rule[] }

/** Where what is not held is read (src/exchange/ports.ts): part by part, or everything at once. */
export interface LookupReads {
  /** PostgreSQL: everything in one statement, each statement being a round trip */
  all?(q: ExchangeQuery): Promise<ExchangeLookup>;
  member(sub: string): Promise<Member | undefined>;
  target(q: Pick<ExchangeQuery, 'audience' | 'resources' | 'clientId'>): Promise<Target>;
  audSub(resourceServerId: string, sub: string): Promise<string | undefined>;
}

export interface LookupCacheLimits {
  /** users held per process (each a few hundred bytes) */
  users: number;
  /** targets (client, audience, resources) held, weighed by their number of candidate rules */
  targetRules: number;
}

/** An enterprise's active users on one worker; the rules of its targets many times over. */
export const LOOKUP_CACHE_LIMITS: LookupCacheLimits = { users: 50_000, targetRules: 100_000 };

/** One part's entries, as of one value of its counter: replaced whole when the counter moves. */
class Generation<V extends object> {
  readonly entries: LRUCache<string, V>;
  readonly counter: number;
  constructor(counter: number, options: LRUCache.Options<string, V, unknown>) {
    this.counter = counter;
    this.entries = new LRUCache(options);
  }
}

const targetKey = (q: Pick<ExchangeQuery, 'audience' | 'resources' | 'clientId'>) => [q.clientId, q.audience, ...q.resources].join('\n');
const userKey = (sub: string, resourceServerId: string | undefined) => `${resourceServerId ?? ''}\n${sub}`;

/** Whether a target can issue an ID-JAG: a known Resource AS, and an MCP server for each resource asked for. */
const complete = (t: Target, q: Pick<ExchangeQuery, 'resources'>) => t.resourceServer !== undefined && t.mcpServers.length === new Set(q.resources).size;

/** Held answers are shared by every exchange that uses them: none may change one for the others. */
function frozen<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) frozen(v);
    Object.freeze(value);
  }
  return value;
}

export class LookupCache {
  #directory: Generation<Directory>;
  #catalog: Generation<Target>;
  readonly #limits: LookupCacheLimits;

  constructor(limits: LookupCacheLimits = LOOKUP_CACHE_LIMITS) {
    this.#limits = limits;
    this.#directory = this.#newDirectory(-1);
    this.#catalog = this.#newCatalog(-1);
  }

  #newDirectory(counter: number) {
    return new Generation<Directory>(counter, { max: this.#limits.users });
  }

  #newCatalog(counter: number) {
    return new Generation<Target>(counter, { maxSize: this.#limits.targetRules, sizeCalculation: (t) => 1 + t.rules.length });
  }

  /**
   * The entries as of these counters. A different counter (newer, or older from a request read just before a
   * change) starts that part afresh: whatever is then held was read after that counter was.
   */
  #at(counters: Counters): { directory: Generation<Directory>; catalog: Generation<Target> } {
    if (this.#directory.counter !== counters.directory) this.#directory = this.#newDirectory(counters.directory);
    if (this.#catalog.counter !== counters.catalog) this.#catalog = this.#newCatalog(counters.catalog);
    return { directory: this.#directory, catalog: this.#catalog };
  }

  /**
   * The lookup for `q` as of `counters` (read with the request's client), reading through `reads` what is not
   * held. What a read returns is kept in the generation it was asked for: if the counters moved meanwhile, that
   * generation is already gone and the answer is not kept.
   */
  async lookup(q: ExchangeQuery, counters: Counters, reads: LookupReads): Promise<ExchangeLookup> {
    const { directory, catalog } = this.#at(counters);
    const tKey = targetKey(q);
    let target = catalog.entries.get(tKey);
    let user = target && directory.entries.get(userKey(q.sub, target.resourceServer?.id));
    if (target && user) return { ...target, ...user };

    if (reads.all) {
      const { member, audSub, ...rest } = await reads.all(q);
      target = rest;
      user = { member, audSub };
    } else {
      target ??= await reads.target(q);
      const rsId = target.resourceServer?.id;
      user ??= directory.entries.get(userKey(q.sub, rsId));
      if (!user) {
        const [member, audSub] = await Promise.all([reads.member(q.sub), rsId === undefined ? undefined : reads.audSub(rsId, q.sub)]);
        user = { member, audSub };
      }
    }
    if (complete(target, q)) {
      catalog.entries.set(tKey, frozen(target));
      if (user.member) directory.entries.set(userKey(q.sub, target.resourceServer!.id), frozen(user));
    }
    return { ...target, ...user };
  }

  /** How much is held (for tests and metrics). */
  get size(): { users: number; targets: number } {
    return { users: this.#directory.entries.size, targets: this.#catalog.entries.size };
  }
}
