export { buildNjs, formatReport, validateWithNginx, type BuildOptions, type BuildReport, type BuildResult } from './build.js';
export { mainConf, snippet, httpPart, serverPart, guardExample, AUTH_LOCATION, type Mode, type MainOptions, type SiteOptions } from './config.js';
export { Supervisor, type SupervisorOptions } from './supervisor.js';
export { buildWorkerBundle } from './workers-bundle.js';
export { main } from './cli.js';
