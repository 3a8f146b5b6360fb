// The lifecycle matrix (conformance/src/lifecycle.ts) against `tsgi apache run`.
import { describeLifecycle } from '@tsgi/conformance/lifecycle';

describeLifecycle({ name: 'tsgi apache run', server: 'apache', command: ['apache', 'run'], args: ['--processes', '2'], workers: true });
