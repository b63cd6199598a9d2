import type { DB } from '../../db/index.ts';
import { listClients } from '../clients.ts';
import { listGroups } from '../groups.ts';
import { listResourceServers } from '../servers.ts';

/** The choices the rule and simulator forms offer: clients, Resource ASes, their MCP servers, groups. */

export interface Option {
  value: string;
  label: string;
  selected?: boolean;
  /** for MCP servers: the Resource AS serving it and the scopes it defines (the form's script filters on them) */
  audience?: string;
  scopes?: string;
}

export async function catalog(db: DB) {
  const servers = await listResourceServers(db);
  return {
    clients: (await listClients(db)).map((c): Option => ({ value: c.client_id, label: c.client_name ? `${c.client_id} (${c.client_name})` : c.client_id })),
    audiences: servers.map((s): Option => ({ value: s.issuer, label: `${s.name} (${s.issuer})` })),
    resources: servers.flatMap((s) => s.mcp_servers.map((m): Option => ({ value: m.resource, label: `${m.name} (${m.resource})`, audience: s.issuer, scopes: m.scopes.join(' ') }))),
    groups: (await listGroups(db)).map((g) => g.name),
  };
}

/** Marks the selected option; a submitted value the list does not hold stays visible (and selected) so its error makes sense. */
export function select(options: Option[], value: string | undefined): Option[] {
  const out = options.map((o) => ({ ...o, selected: o.value === value }));
  if (value && !out.some((o) => o.selected)) out.push({ value, label: value, selected: true });
  return out;
}
