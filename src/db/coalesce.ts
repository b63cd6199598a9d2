/**
 * One read for every request that asks for the same thing within one turn of the event loop. Under load the
 * token exchange's requests arrive in bursts (a group commit releases a batch of answers at once, and their
 * clients ask again together), and on PostgreSQL each read is a round trip whose cost is mostly the trip: the
 * requests of a burst share one read of their client and the change counters instead of making one each.
 *
 * A request only joins a read not yet sent, so what it gets was read after it arrived: a change committed before
 * a request arrived is in its answer, as with a read of its own. A read that fails fails every request that
 * joined it, as each one's own would have.
 */
export function coalesced<K, V>(read: (key: K) => Promise<V>): (key: K) => Promise<V> {
  const waiting = new Map<K, Promise<V>>();
  return (key) => {
    let shared = waiting.get(key);
    if (!shared) {
      shared = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        // sent now: whoever asks from here on arrived after it and waits for a read of its own
        waiting.delete(key);
        return read(key);
      });
      waiting.set(key, shared);
    }
    return shared;
  };
}
