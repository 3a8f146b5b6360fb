/**
 * `tsgi nginx build`: one handler + the njs bridge runtime -> one module that
 * njs 0.7.9 loads. esbuild bundles (it cannot lower to ES5), Babel lowers
 * (babel-preset-njs + our await hoisting), then the export is rewritten into
 * the only form 0.7.9 accepts, and `nginx -t` loads the result.
 */
import { builtinModules, createRequire } from 'node:module';
import { spawn, spawnSync } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build as esbuild, type Plugin } from 'esbuild';
import { StartupError } from '@tsgi/core/node';
import { findJsModule, nginxBinary } from './nginx.js';
import { packageNodePaths } from './workers-bundle.js';

const require = createRequire(import.meta.url);
// Babel ships no types here; the few calls below are typed loosely on purpose.
const babel: any = require('@babel/core');
const presetNjs: any = require('babel-preset-njs');
// Resolved from the preset's own dependencies (it is one of them).
const transformForOf: any = require(createRequire(require.resolve('babel-preset-njs')).resolve('@babel/plugin-transform-for-of'));

const here = dirname(fileURLToPath(import.meta.url));
/** adapters/nginx/runtime (next to src/ and dist/). */
export const defaultRuntimeDir = resolve(here, '..', 'runtime');

export interface BuildOptions {
  handler: string;
  outDir: string;
  /** Bridge runtime directory (bridge.ts, globals.ts, pipeline.ts); defaults to adapters/nginx/runtime. */
  runtimeDir?: string;
  /** Output file name inside outDir. */
  fileName?: string;
  /** Load the result in nginx and run its top level in njs (default: when nginx is installed). */
  validate?: boolean;
  /** With validate: run the handler's init once as well (`tsgi nginx run` starting or reloading). */
  init?: boolean;
  /** js_preload_object globals the handler may read while loading (`--preload NAME=FILE.json`). */
  preload?: { name: string; file: string }[];
  minify?: boolean;
  /** Progress lines while the build takes seconds (`tsgi nginx build` prints them on stderr). */
  progress?: (line: string) => void;
  /** --request-timeout (ms; 0 or absent: none) and --server-timing, baked into the bundle (issue 12). */
  requestTimeoutMs?: number;
  serverTiming?: boolean;
}

export interface LoadTimeCounts {
  /** Functions created while the module evaluates (module scope and module-scope IIFEs). */
  functions: number;
  /** `X.prototype.y = ...`, `X.prototype = ...`, Object.create/setPrototypeOf/defineProperty at load time. */
  prototypeAssignments: number;
  objectLiterals: number;
  arrayLiterals: number;
}

export interface BuildReport extends LoadTimeCounts {
  bytes: number;
  /** Rough extra cost per request on njs 0.7.9 of what the bundle builds at load time (µs). */
  estimatedUsPerRequest: number;
  /** The handler's share (bundle minus the bridge runtime alone), when the baseline could be built. */
  handler?: LoadTimeCounts & { estimatedUsPerRequest: number };
  warnings: string[];
  /** true when nginx loaded the module and njs ran its top level (the handler has a fetch). */
  validated: boolean;
}

export interface BuildResult {
  file: string;
  report: BuildReport;
}

// Node-only free names: a handler using them needs Node (workers mode).
const NODE_GLOBALS = new Set(['require', 'module', '__dirname', '__filename', 'setImmediate', 'clearImmediate', 'global']);
// What njs 0.7.9 lacks (research: njs-and-apache-modules.md A2); `typeof X` checks are fine.
const MISSING_GLOBALS = new Set([
  'Map', 'Set', 'WeakMap', 'WeakSet', 'WeakRef', 'FinalizationRegistry', 'Proxy', 'Reflect', 'BigInt',
  'queueMicrotask', 'structuredClone', 'Intl', 'SharedArrayBuffer', 'Atomics', 'fetch', 'XMLHttpRequest',
]);
// njs's `process` has these; anything else on it is Node's.
const NJS_PROCESS = new Set(['env', 'pid', 'ppid', 'argv']);
const MISSING_STATICS: Record<string, Set<string>> = {
  Array: new Set(['from']),
  Object: new Set(['fromEntries']),
};

const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

function workersHint(handler: string): string {
  return `run it in workers mode instead: tsgi nginx run ${handler} --workers N`;
}

/** What the njs load check (runtime/bridge.ts checkEntry) answers for a handler with `websocket` hooks. */
const WEBSOCKET_PROBLEM = 'websocket hooks';

/** esbuild plugin: Node built-ins fail the build with a message naming them. */
function rejectNodeBuiltins(found: { name: string; importer: string }[]): Plugin {
  return {
    name: 'tsgi-reject-node-builtins',
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        if (!builtins.has(args.path) && !args.path.startsWith('node:')) return undefined;
        found.push({ name: args.path, importer: args.importer });
        // Resolve to an empty module so esbuild goes on and we can list every one.
        return { path: args.path, namespace: 'tsgi-node-builtin' };
      });
      b.onLoad({ filter: /.*/, namespace: 'tsgi-node-builtin' }, () => ({ contents: 'module.exports = {}', loader: 'js' }));
    },
  };
}

function builtinError(found: { name: string; importer: string }[], handlerLabel: string): StartupError {
  const list = [...new Set(found.map((f) => `"${f.name}" (imported by ${relative(process.cwd(), f.importer) || f.importer})`))];
  return new StartupError(
    `${handlerLabel} imports the Node built-in ${list.join(', ')}, which njs cannot run; ${workersHint(handlerLabel)}`,
  );
}

/**
 * `@tsgi/core` inside njs: the runtime-agnostic part (the wire rules, the handler shape, the
 * auth_request mapping, defineHandler) and the runtime's own Response and pipeline helpers, so a
 * handler gets the same names on every host. `@tsgi/core/*` subpaths are Node-only.
 */
function coreShim(rt: RuntimeFiles): Plugin {
  const core = coreSourceDir();
  const contents = `
export { Response, Response as FastResponse } from ${JSON.stringify(rt.globals)};
export { plainResponse, internalError, forbidden } from ${JSON.stringify(rt.pipeline)};
export * from ${JSON.stringify(join(core, 'wire.ts'))};
export { handlerProblem } from ${JSON.stringify(join(core, 'handler-shape.ts'))};
export { accessReply } from ${JSON.stringify(join(core, 'access-reply.ts'))};
export function defineHandler(h) { return h; }
`;
  return {
    name: 'tsgi-core-shim',
    setup(b) {
      b.onResolve({ filter: /^@tsgi\/core(\/.*)?$/ }, (args) => {
        // The runtime's own imports of core's portable sources (@tsgi/core/src/wire.js): the installed core's.
        const src = /^@tsgi\/core\/src\/([\w-]+)\.js$/.exec(args.path);
        if (src && args.importer.startsWith(rt.dir)) return { path: join(core, `${src[1]}.ts`) };
        if (args.path !== '@tsgi/core') {
          return { errors: [{ text: `${args.path} is Node-only; njs bundles may import only '@tsgi/core'` }] };
        }
        return { path: 'tsgi-core', namespace: 'tsgi-core-shim' };
      });
      b.onLoad({ filter: /.*/, namespace: 'tsgi-core-shim' }, () => ({ contents, loader: 'js', resolveDir: here }));
    },
  };
}

function findFile(dir: string, base: string): string | undefined {
  for (const ext of ['.ts', '.js', '.mjs']) {
    const f = join(dir, base + ext);
    if (existsSync(f)) return f;
  }
  return undefined;
}

/**
 * core's src/ (wire.ts & co., bundled into njs as source), wherever @tsgi/core is installed: in this
 * checkout core/, for a user node_modules/@tsgi/core.
 */
function coreSourceDir(): string {
  return dirname(require.resolve('@tsgi/core/src/wire.ts'));
}

export interface RuntimeFiles {
  /** The runtime directory (its files may import core's sources). */
  dir: string;
  /** Exports `bridge`: handler -> the njs functions nginx calls (content, plain, fetch, auth, log, check). */
  bridge: string;
  /** Exports the Web API implementations that replace the handler's free globals. */
  globals: string;
  /** The pipeline port (its plainResponse & co. stand in for core's). */
  pipeline: string;
}

export function runtimeFiles(runtimeDir = defaultRuntimeDir): RuntimeFiles {
  const bridge = findFile(runtimeDir, 'bridge');
  const globals = findFile(runtimeDir, 'globals');
  const pipeline = findFile(runtimeDir, 'pipeline');
  if (!bridge || !globals || !pipeline) throw new StartupError(`njs bridge runtime not found in ${runtimeDir} (bridge.ts, globals.ts, pipeline.ts)`);
  return { dir: resolve(runtimeDir) + sep, bridge, globals, pipeline };
}

/** Name of the helper `iterablesToArrays` adds to a bundle that needs it. */
const ARRAY_HELPER = '__tsgiArray';
// The array of any iterable, the way spread and array destructuring read it (at most `n` items for a
// pattern without rest). Arrays pass through untouched; array-likes (an `arguments` object) are copied.
const ARRAY_HELPER_SOURCE = `function ${ARRAY_HELPER}(x, n) {
  if (Array.isArray(x)) return x;
  if (x == null) throw new TypeError(x + ' is not iterable');
  var out = [];
  var f = x[Symbol.iterator];
  if (typeof f === 'function') {
    var it = f.call(x);
    for (var s = it.next(); !s.done; s = it.next()) {
      out.push(s.value);
      if (out.length === n) break;
    }
    return out;
  }
  if (typeof x === 'string' || typeof x.length === 'number') {
    for (var i = 0; i < x.length; i++) out.push(x[i]);
    return out;
  }
  throw new TypeError('object is not iterable');
}`;

/**
 * Spread (`[...x]`, `f(...x)`) and array destructuring (`const [a, b] = x`) of any iterable. The
 * preset assumes arrays (iterableIsArray), which silently gives `[headers]` for `[...headers]` and
 * undefined for `const [a] = params`. Wrapping the source in the helper keeps the preset's fast
 * array code and makes the rest right. Not covered: array patterns in parameters and catch clauses.
 */
function iterablesToArrays({ types: t }: any): any {
  const wrap = (node: any, n?: number): any =>
    t.callExpression(t.identifier(ARRAY_HELPER), n === undefined ? [node] : [node, t.numericLiteral(n)]);
  const needsWrap = (node: any): boolean => !t.isArrayExpression(node) && !(t.isCallExpression(node) && t.isIdentifier(node.callee, { name: ARRAY_HELPER }));
  const countOf = (pattern: any): number | undefined =>
    pattern.elements.some((e: any) => t.isRestElement(e)) ? undefined : pattern.elements.length;
  return {
    visitor: {
      Program: {
        exit(path: any, state: any) {
          if (state.usedArrayHelper) path.unshiftContainer('body', babel.template.statement.ast(ARRAY_HELPER_SOURCE));
        },
      },
      SpreadElement(path: any, state: any) {
        if (t.isObjectExpression(path.parent) || !needsWrap(path.node.argument)) return;
        path.node.argument = wrap(path.node.argument);
        state.usedArrayHelper = true;
      },
      VariableDeclarator(path: any, state: any) {
        const { id, init } = path.node;
        if (!t.isArrayPattern(id) || !init || !needsWrap(init)) return;
        path.node.init = wrap(init, countOf(id));
        state.usedArrayHelper = true;
      },
      AssignmentExpression(path: any, state: any) {
        const { left, right } = path.node;
        if (path.node.operator !== '=' || !t.isArrayPattern(left) || !needsWrap(right)) return;
        path.node.right = wrap(right, countOf(left));
        state.usedArrayHelper = true;
      },
    },
  };
}

/** Babel plugin: njs 0.7.9 rejects `f(await x)` (babel-preset-njs #4); evaluate arguments into temps first. */
function hoistAwaitFromArguments({ types: t }: any): any {
  function hasAwait(path: any): boolean {
    if (path.isAwaitExpression()) return true;
    let found = false;
    path.traverse({
      Function(p: any) {
        p.skip();
      },
      AwaitExpression(p: any) {
        found = true;
        p.stop();
      },
    });
    return found;
  }
  function rewrite(path: any): void {
    const args = path.get('arguments');
    if (!args.some(hasAwait)) return;
    const fn = path.getFunctionParent();
    const scope = fn ? fn.scope : path.scope.getProgramParent();
    const seq: any[] = [];
    const temp = (value: any): any => {
      const id = scope.generateUidIdentifier('arg');
      scope.push({ id });
      seq.push(t.assignmentExpression('=', id, value));
      return t.cloneNode(id);
    };
    let callee = path.node.callee;
    // Keep `this` for method calls: evaluate the object (and a computed key) first, in order.
    if (t.isMemberExpression(callee) && !t.isSuper(callee.object)) {
      const obj = temp(callee.object);
      const prop = callee.computed ? temp(callee.property) : callee.property;
      callee = t.memberExpression(obj, prop, callee.computed);
    } else if (!t.isIdentifier(callee) && !t.isSuper(callee)) {
      callee = temp(callee);
    }
    const newArgs = path.node.arguments.map((a: any) =>
      t.isSpreadElement(a) ? t.spreadElement(temp(a.argument)) : temp(a),
    );
    seq.push(path.isNewExpression() ? t.newExpression(callee, newArgs) : t.callExpression(callee, newArgs));
    path.replaceWith(t.sequenceExpression(seq));
  }
  return {
    name: 'tsgi-hoist-await-from-arguments',
    visitor: {
      CallExpression: { exit: rewrite },
      NewExpression: { exit: rewrite },
    },
  };
}

/** 0.7.9 accepts only `export default <expr>`: rewrite esbuild's `export { x as default }`, drop other exports. */
function njsExports({ types: t }: any): any {
  return {
    name: 'tsgi-njs-exports',
    visitor: {
      ExportNamedDeclaration(path: any) {
        const { node } = path;
        if (node.source) throw path.buildCodeFrameError('re-exports cannot reach njs');
        if (node.declaration) {
          path.replaceWith(node.declaration);
          return;
        }
        const def = node.specifiers.find((s: any) => t.isIdentifier(s.exported, { name: 'default' }));
        if (def) path.replaceWith(t.exportDefaultDeclaration(t.identifier(def.local.name)));
        else path.remove();
      },
    },
  };
}

// Babel's iteration helpers keep an Array.from branch for Map/Set, which njs 0.7.9 cannot have: unreachable there.
const BABEL_HELPERS = /^_(unsupportedIterableToArray|iterableToArray|arrayLikeToArray|createForOfIteratorHelper(Loose)?|toConsumableArray|slicedToArray|iterableToArrayLimit)\d*$/;
function inBabelHelper(path: any): boolean {
  for (let fn = path.getFunctionParent(); fn; fn = fn.getFunctionParent()) {
    if (fn.node.id && BABEL_HELPERS.test(fn.node.id.name)) return true;
  }
  return false;
}

interface Scan extends LoadTimeCounts {
  nodeGlobals: string[];
  missing: string[];
}

/** Babel pass over the final code: what runs at load time, and which globals njs lacks. */
function scan(ast: any): Scan {
  const out: Scan = { functions: 0, prototypeAssignments: 0, objectLiterals: 0, arrayLiterals: 0, nodeGlobals: [], missing: [] };
  const isIife = (fn: any): boolean => {
    const p = fn.parentPath;
    return p && (p.isCallExpression() || p.isNewExpression()) && p.node.callee === fn.node;
  };
  // Code runs at load time when every enclosing function is an IIFE that itself runs at load time.
  const atLoad = (path: any): boolean => {
    let fn = path.getFunctionParent();
    while (fn) {
      if (!isIife(fn)) return false;
      fn = fn.getFunctionParent();
    }
    return true;
  };
  const isProtoMember = (n: any): boolean =>
    n?.type === 'MemberExpression' &&
    ((!n.computed && n.property.name === 'prototype') ||
      (n.object?.type === 'MemberExpression' && !n.object.computed && n.object.property.name === 'prototype'));
  const nodeG = new Set<string>();
  const missing = new Set<string>();
  // Babel's class lowering writes `var _proto = C.prototype; _proto.m = ...`: follow such aliases.
  const protoAliases = new Set<string>();
  babel.traverse(ast, {
    VariableDeclarator(path: any) {
      const { id, init } = path.node;
      if (id.type === 'Identifier' && init?.type === 'MemberExpression' && !init.computed && init.property.name === 'prototype') {
        protoAliases.add(id.name);
      }
    },
  });
  const isAliasMember = (n: any): boolean =>
    n?.type === 'MemberExpression' && n.object.type === 'Identifier' && protoAliases.has(n.object.name);
  babel.traverse(ast, {
    Function(path: any) {
      if (atLoad(path)) out.functions++;
    },
    ObjectExpression(path: any) {
      if (atLoad(path)) out.objectLiterals++;
    },
    ArrayExpression(path: any) {
      if (atLoad(path)) out.arrayLiterals++;
    },
    AssignmentExpression(path: any) {
      if ((isProtoMember(path.node.left) || isAliasMember(path.node.left)) && atLoad(path)) out.prototypeAssignments++;
    },
    CallExpression(path: any) {
      const c = path.node.callee;
      if (
        c.type === 'MemberExpression' &&
        c.object.type === 'Identifier' &&
        c.object.name === 'Object' &&
        ['create', 'setPrototypeOf', 'defineProperty', 'defineProperties'].includes(c.property.name) &&
        atLoad(path)
      ) {
        out.prototypeAssignments++;
      }
    },
    ReferencedIdentifier(path: any) {
      const name = path.node.name;
      if (path.scope.hasBinding(name, true)) return;
      const parent = path.parentPath;
      if (parent.isUnaryExpression({ operator: 'typeof' })) return;
      if (NODE_GLOBALS.has(name)) nodeG.add(name);
      else if (MISSING_GLOBALS.has(name)) missing.add(name);
      else if (parent.isMemberExpression() && parent.node.object === path.node && !parent.node.computed) {
        const prop = parent.node.property.name;
        if (name === 'process' && !NJS_PROCESS.has(prop)) nodeG.add(`process.${prop}`);
        else if (MISSING_STATICS[name]?.has(prop) && !inBabelHelper(path)) missing.add(`${name}.${prop}`);
      }
    },
  });
  out.nodeGlobals = [...nodeG];
  out.missing = [...missing];
  return out;
}

// Per request on njs 0.7.9 (njs-vm-cost.md): ~0.04 µs a function, ~0.4 µs a prototype change,
// ~0.16 µs a load-time object; a bare js_content hello costs ~10 µs.
function estimate(c: LoadTimeCounts): number {
  const us = c.functions * 0.04 + c.prototypeAssignments * 0.4 + (c.objectLiterals + c.arrayLiterals) * 0.16;
  return Math.round(us * 10) / 10;
}
export const WARN_US = 10;
export const WARN_PROTOTYPES = 1500;

function counts(s: LoadTimeCounts): LoadTimeCounts {
  return {
    functions: s.functions,
    prototypeAssignments: s.prototypeAssignments,
    objectLiterals: s.objectLiterals,
    arrayLiterals: s.arrayLiterals,
  };
}

interface Compiled {
  code: string;
  scan: Scan;
}

async function compile(entry: string, resolveDir: string, handlerLabel: string, rt: RuntimeFiles, minify: boolean): Promise<Compiled> {
  const found: { name: string; importer: string }[] = [];
  let result;
  try {
    result = await esbuild({
      stdin: { contents: entry, resolveDir, sourcefile: 'tsgi-njs-entry.js', loader: 'js' },
      bundle: true,
      write: false,
      platform: 'neutral',
      format: 'esm',
      // es2020 keeps what babel-preset-njs lowers with Object.assign (spread, ?.) for Babel.
      target: 'es2020',
      mainFields: ['module', 'main'],
      nodePaths: packageNodePaths(),
      conditions: ['worker', 'browser'],
      inject: [rt.globals],
      define: { 'process.env.NODE_ENV': '"production"' },
      plugins: [rejectNodeBuiltins(found), coreShim(rt)],
      minifySyntax: minify,
      legalComments: 'none',
      logLevel: 'silent',
      charset: 'utf8',
    });
  } catch (err) {
    const e = err as { errors?: { text: string; location?: { file: string; line: number } | null }[] };
    const first = e.errors?.[0];
    if (found.length) throw builtinError(found, handlerLabel);
    if (first) {
      const at = first.location ? ` (${first.location.file}:${first.location.line})` : '';
      throw new StartupError(`cannot bundle ${handlerLabel}: ${first.text}${at}`);
    }
    throw err;
  }
  if (found.length) throw builtinError(found, handlerLabel);
  const final = lowerAst(result.outputFiles[0]!.text);
  return { code: final.code as string, scan: scan(final.ast) };
}

function lowerAst(bundled: string): { code: string; ast: unknown } {
  // Pass 0: for-of, spread and array destructuring over any iterable (Headers, URLSearchParams,
  // strings...), not only arrays: the preset assumes arrays (iterableIsArray), which makes such loops
  // silently run zero times and such spreads give one wrong element. njs 0.7.9 has Symbol.iterator,
  // which the loose for-of helper and ours use.
  const iterated = babel.transformSync(bundled, {
    babelrc: false,
    configFile: false,
    sourceType: 'module',
    plugins: [[transformForOf, { loose: true }], iterablesToArrays],
    compact: false,
    comments: false,
  });
  // Pass 1: the njs preset (classes, destructuring, spread, ?., defaults...).
  const lowered = babel.transformSync(iterated.code, {
    babelrc: false,
    configFile: false,
    sourceType: 'module',
    presets: [presetNjs],
    compact: false,
    comments: false,
  });
  // Pass 2: on the lowered code (spread/classes already gone): await hoisting, exports.
  const final = babel.transformSync(lowered.code, {
    babelrc: false,
    configFile: false,
    sourceType: 'module',
    plugins: [hoistAwaitFromArguments, njsExports],
    compact: false,
    comments: false,
    ast: true,
  });
  return final;
}

/**
 * Any entry module (ESM source; it may import the runtime's files) compiled for njs the way a
 * handler's bundle is, without the checks and the report: the runtime's own tests use it.
 */
export async function compileForNjs(entry: string, resolveDir: string): Promise<string> {
  return (await compile(entry, resolveDir, 'entry', runtimeFiles(), false)).code;
}

/** The bundle's entry; the operations settings are constants in it (reading nginx variables costs per request). */
function entryFor(handler: string, rt: RuntimeFiles, ops: { requestTimeoutMs?: number; serverTiming?: boolean } = {}): string {
  const args = ops.requestTimeoutMs || ops.serverTiming ? `, ${ops.requestTimeoutMs ?? 0}, ${ops.serverTiming === true}` : '';
  return `import handler from ${JSON.stringify(handler)};
import { bridge as tsgiBridge } from ${JSON.stringify(rt.bridge)};
export default tsgiBridge(handler${args});
`;
}

const BASELINE_HANDLER = `export default { fetch: function () { return new Response('hello\\n'); } };\n`;
const baselines = new Map<string, Promise<Scan | undefined>>();

/** The bridge runtime alone (with a one-line handler), so the report can show the handler's share. */
function baseline(rt: RuntimeFiles, minify: boolean): Promise<Scan | undefined> {
  const key = `${rt.bridge}|${minify}`;
  let p = baselines.get(key);
  if (!p) {
    p = (async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tsgi-njs-base-'));
      try {
        const h = join(dir, 'hello.js');
        writeFileSync(h, BASELINE_HANDLER);
        return (await compile(entryFor(h, rt), dir, 'baseline', rt, minify)).scan;
      } catch {
        return undefined;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
    baselines.set(key, p);
  }
  return p;
}

/** Loads the module in nginx (`nginx -t`): njs compiles and evaluates it at config time. */
export function validateWithNginx(file: string): { ok: boolean; message: string } {
  const nginx = nginxBinary();
  const mod = findJsModule();
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-njs-check-'));
  try {
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      `load_module ${mod};
pid ${dir}/nginx.pid;
error_log stderr notice;
events {}
http {
  access_log off;
  client_body_temp_path ${dir};
  proxy_temp_path ${dir};
  fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir};
  scgi_temp_path ${dir};
  js_import tsgi from ${file};
  server {
    listen unix:${dir}/check.sock;
    location / { js_content tsgi.content; }
  }
}
`,
    );
    const r = spawnSync(nginx, ['-t', '-q', '-p', dir, '-c', conf], { encoding: 'utf8' });
    const text = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim();
    return { ok: r.status === 0, message: text };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Loads the bundle in a one-shot nginx (its own temp dir, a Unix socket, no
 * master process) and asks the bridge's `check` entry in one request. nginx
 * only compiles an njs module when it reads its config; njs 0.7.9 runs the
 * module's top level per request, so a throw while loading, a handler
 * without fetch and (init) a failing init show up only then. Resolves to
 * null, or the problem in one line.
 */
export async function loadInNjs(file: string, opts: { init?: boolean; preload?: { name: string; file: string }[] } = {}): Promise<string | null> {
  const nginx = nginxBinary();
  const mod = findJsModule();
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-njs-load-'));
  const sock = join(dir, 'check.sock');
  const log = join(dir, 'error.log');
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `load_module ${mod};
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${log} error;
events { worker_connections 16; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  js_import tsgi from ${file};
${(opts.preload ?? []).map((p) => `  js_preload_object ${p.name} from ${p.file};\n`).join('')}  server {
    listen unix:${sock};
    location / { js_content tsgi.check; }
  }
}
`,
  );
  const proc = spawn(nginx, ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((res) => proc.once('exit', () => res()));
  const readLog = (): string => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  try {
    const deadline = Date.now() + 15_000;
    while (!existsSync(sock)) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        const text = `${stderr}\n${readLog()}`;
        const line = text.split('\n').find((l) => l.includes('[emerg]')) ?? text.trim().split('\n')[0] ?? '';
        return `nginx rejected the njs bundle ${file}: ${line.replace(/^.*\[emerg\] \d+#\d+: /, '')}`;
      }
      if (Date.now() > deadline) return `nginx did not start to load ${file}`;
      await new Promise((r) => setTimeout(r, 20));
    }
    const answer = await new Promise<{ status: number; body: string }>((res, rej) => {
      const req = httpRequest({ socketPath: sock, path: opts.init ? '/?init=1' : '/', timeout: 30_000 }, (resp) => {
        let body = '';
        resp.setEncoding('utf8');
        resp.on('data', (c: string) => (body += c));
        resp.on('end', () => res({ status: resp.statusCode ?? 0, body }));
      });
      req.on('timeout', () => req.destroy(new Error('no answer from the load check within 30 s')));
      req.on('error', rej);
      req.end();
    });
    if (answer.status === 200 && answer.body === 'tsgi-check: ok') return null;
    if (answer.body.startsWith('tsgi-check: ')) return answer.body.slice(12).trim();
    // njs could not even run the module: its exception is in the error log.
    const m = /js exception: ([^\n]*)/.exec(readLog());
    return m ? `throws while loading in njs: ${m[1]!.trim()}` : `njs could not run it (status ${answer.status})`;
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function buildNjs(opts: BuildOptions): Promise<BuildResult> {
  const handler = resolve(opts.handler);
  if (!existsSync(handler) || !statSync(handler).isFile()) throw new StartupError(`handler not found: ${handler}`);
  const rt = runtimeFiles(opts.runtimeDir);
  const minify = opts.minify ?? false;
  const label = relative(process.cwd(), handler) || handler;
  const started = Date.now();
  opts.progress?.(`bundling ${label} for njs 0.7.9 (esbuild, then Babel)...`);
  const { code, scan: s } = await compile(entryFor(handler, rt, opts), dirname(handler), label, rt, minify);

  if (s.nodeGlobals.length) {
    throw new StartupError(`${label} uses the Node-only ${s.nodeGlobals.join(', ')}, which njs cannot run; ${workersHint(label)}`);
  }
  if (s.missing.length) {
    throw new StartupError(
      `${label} (or a package it imports) uses ${s.missing.join(', ')}, missing in njs 0.7.9; ${workersHint(label)}`,
    );
  }

  const outDir = resolve(opts.outDir);
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, opts.fileName ?? 'tsgi.js');
  writeFileSync(file, `// tsgi njs bundle of ${label}; generated by tsgi nginx build\n${code}\n`);
  // nginx's unprivileged workers must read it.
  chmodSync(file, 0o644);

  const total = counts(s);
  const report: BuildReport = {
    bytes: Buffer.byteLength(code),
    ...total,
    estimatedUsPerRequest: estimate(total),
    warnings: [],
    validated: false,
  };
  const base = await baseline(rt, minify);
  const own = base
    ? {
        functions: Math.max(0, s.functions - base.functions),
        prototypeAssignments: Math.max(0, s.prototypeAssignments - base.prototypeAssignments),
        objectLiterals: Math.max(0, s.objectLiterals - base.objectLiterals),
        arrayLiterals: Math.max(0, s.arrayLiterals - base.arrayLiterals),
      }
    : total;
  if (base) report.handler = { ...own, estimatedUsPerRequest: estimate(own) };
  const ownUs = estimate(own);
  if (ownUs > WARN_US) {
    report.warnings.push(
      `the handler builds ~${own.functions} functions, ${own.prototypeAssignments} prototype changes and ` +
        `${own.objectLiterals + own.arrayLiterals} objects at load time; njs 0.7.9 re-runs the module and builds them again for every request ` +
        `(~${ownUs} µs each, about as much as a whole bare njs request or more): workers mode (--workers N) will likely serve it better`,
    );
  }
  if (own.prototypeAssignments > WARN_PROTOTYPES) {
    report.warnings.push(
      `${own.prototypeAssignments} prototype changes at load time: near the size where njs 0.7.9 overflows its stack per request; use workers mode`,
    );
  }

  if (opts.validate !== false && (opts.validate === true || nginxBinary(false))) {
    opts.progress?.('loading the bundle in nginx to check it...');
    const problem = await loadInNjs(file, { init: opts.init, preload: opts.preload });
    if (problem === WEBSOCKET_PROBLEM) {
      throw new StartupError(`${label} has websocket hooks, which embedded nginx cannot carry (njs has no WebSocket server); ${workersHint(label)}`);
    }
    if (problem !== null) throw new StartupError(problem.startsWith('nginx ') ? problem : `${label}: ${problem}`);
    report.validated = true;
  }
  opts.progress?.(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { file, report };
}

export function formatReport(r: BuildResult): string {
  const x = r.report;
  const lines = [
    `wrote ${r.file} (${x.bytes} bytes${x.validated ? ', loads in nginx' : ''})`,
    `load time (whole bundle): ${x.functions} functions, ${x.prototypeAssignments} prototype changes, ` +
      `${x.objectLiterals} objects, ${x.arrayLiterals} arrays; ~${x.estimatedUsPerRequest} µs per request on njs 0.7.9`,
  ];
  if (x.handler) {
    const h = x.handler;
    lines.push(
      `  of which the handler: ${h.functions} functions, ${h.prototypeAssignments} prototype changes, ` +
        `${h.objectLiterals} objects, ${h.arrayLiterals} arrays; ~${h.estimatedUsPerRequest} µs`,
    );
  }
  for (const w of x.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}
