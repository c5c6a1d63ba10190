// testserver for VS Code: one warm `testserver bridge` per workspace folder, started when
// the folder opens; saving a test file runs its tests on it, failures go to the Problems
// panel at the line where they failed, the status bar says loading, ready, running or the
// last result. No dependencies, no build step: link this folder into ~/.vscode/extensions.
// The bridge's JSON lines are described in spec/json-output.md, section 6.
'use strict';

const vscode = require('vscode');
const childProcess = require('child_process');
const path = require('path');
const readline = require('readline');

const FRAME = /^\s*File "(.+)", line (\d+)/;
const DEPENDENCIES = /[\\/](site-packages|dist-packages|\.venv|venv|\.tox|\.nox)[\\/]/;
const TEST_FILE = /^test.*\.py$/;

/** One bridge process for one workspace folder, and what the editor shows of it. */
class Bridge {
  constructor(root, ui) {
    this.root = root;
    this.ui = ui;
    this.nextId = 0;
    this.last = null; // the last run's selectors; [] is every test
    this.failures = [];
    this.state = 'stopped';
    this.start();
  }

  start() {
    const config = vscode.workspace.getConfiguration('testserver');
    const command = config.get('command', ['python', '-m', 'testserver'])
      .map((part) => part.replace('${workspaceFolder}', this.root));
    const args = config.get('args', ['-t', '.', '-s', '.']);
    this.top = path.resolve(this.root, optionValue(args, '-t') || optionValue(args, '-s') || '.');
    this.setState('loading', 'loading the tests...');
    this.process = childProcess.spawn(command[0], [...command.slice(1), 'bridge', ...args], {
      cwd: this.root,
    });
    this.process.on('error', (error) => this.setState('stopped', `cannot start: ${error.message}`));
    this.process.on('exit', (code) => {
      this.ui.output.appendLine(`testserver bridge for ${this.root} exited (${code})`);
      this.setState('stopped', 'stopped');
    });
    this.process.stderr.on('data', (data) => this.ui.output.append(data.toString()));
    readline.createInterface({ input: this.process.stdout }).on('line', (line) => {
      try {
        this.onEvent(JSON.parse(line));
      } catch (error) {
        this.ui.output.appendLine(`testserver: ${error.message} in ${line}`);
      }
    });
  }

  setState(state, text) {
    this.state = state;
    this.ui.status(this, text);
  }

  send(command) {
    if (this.state === 'stopped') {
      this.start();
    }
    this.process.stdin.write(JSON.stringify(command) + '\n');
  }

  run(tests) {
    this.last = tests;
    this.send({ id: ++this.nextId, command: 'run', tests, input: false });
  }

  stop() {
    if (this.state !== 'stopped') {
      this.process.stdin.write(JSON.stringify({ command: 'quit' }) + '\n');
    }
  }

  onEvent(event) {
    const output = this.ui.output;
    switch (event.event) {
      case 'ready':
        this.setState('ready', `${event.tests} tests`);
        for (const error of event.load_errors) {
          output.appendLine(`cannot import ${error.module}: ${error.message}`);
        }
        if (event.load_errors.length) {
          this.ui.warn(`testserver: ${event.load_errors.length} test module(s) failed to import`);
        }
        break;
      case 'start':
        this.failures = [];
        this.setState('running', `running ${event.tests} test(s)`);
        break;
      case 'test':
        if (event.status === 'fail' || event.status === 'uxsuccess') {
          this.failures.push(event);
        }
        break;
      case 'summary':
        output.appendLine(event.text);
        this.setState('ready', event.text.replace(/^Ran .* — /, ''));
        this.ui.problems(this, this.failures);
        break;
      case 'message':
        output.appendLine(`testserver: ${event.text}`);
        break;
      case 'error':
        output.appendLine(`testserver: ${event.message}`);
        break;
      case 'complete':
        if (event.status === 'error') {
          output.appendLine(`testserver: ${event.command} failed: ${event.message || event.code}`);
          if (this.state === 'running') this.setState('ready', 'run failed');
        }
        break;
      default:
        break;
    }
  }

  /** The dotted module name of a file under the top-level directory, or null. */
  moduleOf(file) {
    const relative = path.relative(this.top, file);
    if (relative.startsWith('..') || path.isAbsolute(relative) || !relative.endsWith('.py')) {
      return null;
    }
    return relative.slice(0, -3).split(path.sep).join('.');
  }
}

function optionValue(args, name) {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : null;
}

/** Where a failure happened: the innermost traceback frame in the folder, else the test. */
function location(event, root) {
  const traceback = (event.attachments && event.attachments.traceback) || '';
  let found = null;
  for (const line of traceback.split('\n')) {
    const match = FRAME.exec(line);
    if (match && match[1].startsWith(root + path.sep) && !DEPENDENCIES.test(match[1])) {
      found = { file: match[1], line: Number(match[2]) };
    }
  }
  return found || (event.file ? { file: event.file, line: event.line || 1 } : null);
}

function lastLine(text) {
  const lines = (text || '').split('\n').filter((line) => line.trim());
  return lines.length ? lines[lines.length - 1].trim() : '';
}

/** The status bar, the output channel and the Problems panel. */
class Ui {
  constructor(context) {
    this.output = vscode.window.createOutputChannel('testserver');
    this.bar = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 10);
    this.bar.command = 'testserver.showOutput';
    this.diagnostics = vscode.languages.createDiagnosticCollection('testserver');
    context.subscriptions.push(this.output, this.bar, this.diagnostics);
  }

  status(bridge, text) {
    const icons = { loading: '$(sync~spin)', running: '$(sync~spin)', ready: '$(beaker)' };
    this.bar.text = `${icons[bridge.state] || '$(circle-slash)'} testserver: ${text}`;
    this.bar.tooltip = `testserver for ${bridge.root} (${bridge.state})`;
    this.bar.show();
  }

  warn(text) {
    vscode.window.showWarningMessage(text);
  }

  problems(bridge, failures) {
    const byFile = new Map();
    for (const event of failures) {
      const where = location(event, bridge.root);
      if (!where || (event.kind === 'test' && failures.some((f) => f.parent_id === event.test_id))) {
        continue; // a parent that failed through its subtests: they are shown
      }
      const line = Math.max(where.line - 1, 0);
      const text = event.attachments && (event.attachments.traceback || event.attachments.reason);
      const diagnostic = new vscode.Diagnostic(
        new vscode.Range(line, 0, line, 1000),
        `${event.test_id}: ${lastLine(text) || event.status}`,
        vscode.DiagnosticSeverity.Error,
      );
      diagnostic.source = 'testserver';
      if (!byFile.has(where.file)) byFile.set(where.file, []);
      byFile.get(where.file).push(diagnostic);
    }
    this.diagnostics.clear();
    for (const [file, list] of byFile) {
      this.diagnostics.set(vscode.Uri.file(file), list);
    }
  }
}

function activate(context) {
  const ui = new Ui(context);
  const bridges = new Map();
  const bridgeFor = (uri) => {
    const folder = uri ? vscode.workspace.getWorkspaceFolder(uri) : null;
    const root = (folder || (vscode.workspace.workspaceFolders || [])[0] || {}).uri;
    if (!root) return null;
    if (!bridges.has(root.fsPath)) bridges.set(root.fsPath, new Bridge(root.fsPath, ui));
    return bridges.get(root.fsPath);
  };
  const activeUri = () => {
    const editor = vscode.window.activeTextEditor;
    return editor ? editor.document.uri : null;
  };
  const runFile = (uri) => {
    const bridge = bridgeFor(uri);
    const module = bridge && uri ? bridge.moduleOf(uri.fsPath) : null;
    if (module) bridge.run([module]);
  };
  for (const folder of vscode.workspace.workspaceFolders || []) {
    bridgeFor(folder.uri); // warm from the start: loading, then ready
  }
  const register = (name, fn) =>
    context.subscriptions.push(vscode.commands.registerCommand(name, fn));
  register('testserver.runFile', () => runFile(activeUri()));
  register('testserver.runAll', () => { const b = bridgeFor(activeUri()); if (b) b.run([]); });
  register('testserver.runLast', () => { const b = bridgeFor(activeUri()); if (b) b.run(b.last || []); });
  register('testserver.cancel', () => { const b = bridgeFor(activeUri()); if (b) b.send({ command: 'cancel' }); });
  register('testserver.restart', () => {
    const bridge = bridgeFor(activeUri());
    if (bridge) { bridge.stop(); bridges.delete(bridge.root); bridgeFor(activeUri()); }
  });
  register('testserver.showOutput', () => ui.output.show(true));
  context.subscriptions.push(vscode.workspace.onDidSaveTextDocument((document) => {
    if (document.languageId !== 'python') return;
    if (!vscode.workspace.getConfiguration('testserver').get('runOnSave', true)) return;
    if (TEST_FILE.test(path.basename(document.uri.fsPath))) {
      runFile(document.uri);
    } else {
      const bridge = bridgeFor(document.uri);
      if (bridge) bridge.run(bridge.last || []); // the last tests, or all of them
    }
  }));
  context.subscriptions.push({ dispose: () => bridges.forEach((bridge) => bridge.stop()) });
}

function deactivate() {}

module.exports = { activate, deactivate, location, Bridge };
