// Drives the VS Code example extension with the stand-in `vscode` module against a real
// `testserver bridge`: activate in ROOT, wait for ready, save FILE, wait for the Problems,
// then print what the extension showed as one JSON object. Usage:
//   NODE_PATH=tests/vscode node drive.js EXTENSION ROOT FILE CONFIG_JSON
'use strict';

const vscode = require('vscode');
const [extension, root, file, config] = process.argv.slice(2);

function waitFor(predicate, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      if (predicate()) return resolve();
      if (Date.now() - started > 60000) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(check, 20);
    };
    check();
  });
}

async function main() {
  vscode._setup(root, JSON.parse(config));
  const context = { subscriptions: [] };
  require(extension).activate(context);
  const state = vscode._state;
  await waitFor(() => state.status.some((text) => text.includes('tests')), 'ready');
  vscode._save(file);
  await waitFor(() => state.diagnostics.some((d) => d !== 'clear'), 'the problems');
  context.subscriptions.forEach((item) => item.dispose && item.dispose());
  const { saveListeners, ...shown } = state;
  process.stdout.write(JSON.stringify(shown) + '\n');
}

main().catch((error) => {
  process.stderr.write(String(error.stack || error) + '\n' + JSON.stringify(vscode._state) + '\n');
  process.exit(1);
});
