import type { KeyPurpose } from '../../db/schema.ts';
import { listKeys, RotateInput, rotateKeys } from '../signing-keys.ts';
import { Form } from './forms.ts';
import { actorOf, done, failed, page, type UiDeps, type UiRouter } from './page.ts';

/** The published JWKS, which key signs what, and rotation (new keys sign at once; old ones stay published a while). */
export function keyRoutes(r: UiRouter, deps: UiDeps): void {
  r.get('/keys', async (ctx) => {
    const keys = await listKeys(deps.db);
    page(ctx, deps, 'keys', 'keys', {
      title: 'Signing keys',
      keys: keys.keys,
      signing: Object.entries(keys.signing).map(([purpose, kid]) => ({ purpose, kid })),
      jwks: JSON.stringify(keys.jwks, null, 2),
    });
  });

  r.post('/keys/rotate', async (ctx) => {
    const f = Form.of(ctx);
    try {
      const chosen = f.all('purposes');
      if (chosen.length === 0) f.issues.push({ path: ['purposes'], message: 'choose what to rotate: ID Token keys, ID-JAG keys, or both' });
      const { purposes } = f.parse(RotateInput, { purposes: chosen as KeyPurpose[] });
      const { created } = await rotateKeys(deps.db, purposes, actorOf(ctx), deps.reloadKeys);
      done(ctx, '/admin/keys', `Rotated: ${created.join(', ')} now sign${created.length === 1 ? 's' : ''}. The previous keys stay in the JWKS for tokens they signed.`);
    } catch (err) {
      failed(ctx, '/admin/keys', err);
    }
  });
}
