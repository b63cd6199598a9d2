/**
 * HTTP Basic client credentials (RFC 6749 §2.3.1: client id and secret each form-urlencoded, then joined by a
 * colon and base64-encoded). Undefined for anything that is not exactly that; never throws.
 */
export function basicCredentials(header: string): { id: string; secret: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 1) return undefined;
  try {
    const unescape = (s: string) => decodeURIComponent(s.replace(/\+/g, '%20'));
    return { id: unescape(decoded.slice(0, i)), secret: unescape(decoded.slice(i + 1)) };
  } catch {
    return undefined;
  }
}
