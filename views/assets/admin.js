// Small progressive enhancements for the admin pages; every page works without them.
'use strict';

// Destructive buttons ask first.
document.addEventListener('submit', (event) => {
  const form = event.target;
  const message = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Rule and simulator forms: offer only the MCP servers of the chosen Resource AS, and show the scopes the
// chosen MCP server defines.
function linkTargets(form) {
  const audience = form.querySelector('select[name="audience"]');
  const resource = form.querySelector('select[name="resource"]');
  if (!audience || !resource) return;
  const hint = document.getElementById(resource.dataset.scopeHint || '');
  const update = () => {
    for (const option of resource.options) {
      if (!option.dataset.audience) continue;
      option.hidden = Boolean(audience.value) && option.dataset.audience !== audience.value;
    }
    const chosen = resource.selectedOptions[0];
    if (chosen && chosen.hidden) resource.value = '';
    if (hint) {
      const current = resource.selectedOptions[0];
      hint.textContent = current && current.dataset.scopes !== undefined
        ? `This MCP server defines: ${current.dataset.scopes || 'no scopes'}`
        : '';
    }
  };
  audience.addEventListener('change', update);
  resource.addEventListener('change', () => {
    const current = resource.selectedOptions[0];
    if (current && current.dataset.audience && !audience.value) audience.value = current.dataset.audience;
    update();
  });
  update();
}

// Rule form: show the group or user box of the chosen "who".
function linkWho(form) {
  const radios = form.querySelectorAll('input[name="who"]');
  if (!radios.length) return;
  const update = () => {
    const chosen = form.querySelector('input[name="who"]:checked');
    for (const box of form.querySelectorAll('[data-who]')) box.hidden = !chosen || box.dataset.who !== chosen.value;
  };
  radios.forEach((r) => r.addEventListener('change', update));
  update();
}

for (const form of document.querySelectorAll('form')) {
  linkTargets(form);
  linkWho(form);
}

// One-time secrets: one click selects the whole value, ready to copy.
for (const input of document.querySelectorAll('input[data-select-all]')) {
  input.addEventListener('focus', () => input.select());
}
