// Progressive enhancements for the playground; every step works without them.
'use strict';

// Copy as curl: a button next to each command.
for (const details of document.querySelectorAll('details.curl')) {
  const command = details.querySelector('pre.curl-command');
  const summary = details.querySelector('summary');
  if (!command || !summary || !navigator.clipboard) continue;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'copy';
  button.textContent = 'Copy';
  button.addEventListener('click', async (event) => {
    event.preventDefault();
    try {
      await navigator.clipboard.writeText(command.textContent);
      button.textContent = 'Copied';
    } catch {
      details.open = true;
      button.textContent = 'Select the command and copy it';
    }
  });
  summary.append(button);
}

// The exchange form: offer only the MCP servers of the chosen Resource AS, and only the scopes the chosen MCP
// server defines (hidden choices are unchecked, so they are not sent).
const form = document.querySelector('form.exchange-form');
if (form) {
  const audience = form.querySelector('select[name="audience"]');
  const resource = form.querySelector('select[name="resource"]');
  const scopes = form.querySelectorAll('label[data-resource]');
  const update = (chosenNow) => {
    for (const option of resource.options) {
      if (option.dataset.audience) option.hidden = option.dataset.audience !== audience.value;
    }
    if (resource.selectedOptions[0] && resource.selectedOptions[0].hidden) resource.value = '';
    for (const label of scopes) {
      const box = label.querySelector('input');
      const shown = label.dataset.resource === resource.value;
      if (!shown) box.checked = false;
      // a newly chosen MCP server starts with all of its scopes
      else if (chosenNow) box.checked = true;
      label.hidden = !shown;
    }
  };
  audience.addEventListener('change', () => update(true));
  resource.addEventListener('change', () => update(true));
  update(false);
}
