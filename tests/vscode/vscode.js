// A stand-in for the `vscode` module, just enough of the API for
// examples/editors/vscode/testserver-vscode/extension.js, recording what the extension
// shows. Used by drive.js (tests/test_vscode.py); found through NODE_PATH.
'use strict';

const state = { status: [], diagnostics: [], output: [], warnings: [], saveListeners: [] };
let settings = {};
let folders = [];

class Range {
  constructor(startLine, startCharacter, endLine, endCharacter) {
    this.start = { line: startLine, character: startCharacter };
    this.end = { line: endLine, character: endCharacter };
  }
}

class Diagnostic {
  constructor(range, message, severity) {
    Object.assign(this, { range, message, severity });
  }
}

const Uri = { file: (fsPath) => ({ fsPath }) };

module.exports = {
  _state: state,
  _setup(root, config) {
    folders = [{ uri: Uri.file(root) }];
    settings = config;
  },
  _save(file) {
    const document = { uri: Uri.file(file), languageId: 'python' };
    state.saveListeners.forEach((listener) => listener(document));
  },
  Range,
  Diagnostic,
  Uri,
  DiagnosticSeverity: { Error: 0 },
  StatusBarAlignment: { Left: 1 },
  window: {
    activeTextEditor: null,
    createOutputChannel: () => ({
      append: (text) => state.output.push(text),
      appendLine: (text) => state.output.push(text + '\n'),
      show() {},
      dispose() {},
    }),
    createStatusBarItem: () => {
      const item = { show() { state.status.push(item.text); }, hide() {}, dispose() {} };
      return item;
    },
    showWarningMessage: (text) => state.warnings.push(text),
  },
  languages: {
    createDiagnosticCollection: () => ({
      clear() { state.diagnostics.push('clear'); },
      set(uri, list) {
        state.diagnostics.push({ file: uri.fsPath, list: list.map((d) => ({ line: d.range.start.line, message: d.message })) });
      },
      dispose() {},
    }),
  },
  workspace: {
    get workspaceFolders() { return folders; },
    getWorkspaceFolder: (uri) => folders.find((f) => uri.fsPath.startsWith(f.uri.fsPath)) || null,
    getConfiguration: () => ({ get: (key, fallback) => (key in settings ? settings[key] : fallback) }),
    onDidSaveTextDocument(listener) {
      state.saveListeners.push(listener);
      return { dispose() {} };
    },
  },
  commands: { registerCommand: (name, fn) => ({ name, fn, dispose() {} }) },
};
