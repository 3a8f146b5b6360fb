// The lifecycle matrix (conformance/src/lifecycle.ts) against `tsgi nginx run`, both modes.
import { describeLifecycle } from '@tsgi/conformance/lifecycle';

describeLifecycle({ name: 'tsgi nginx run', server: 'nginx', mode: 'embedded', command: ['nginx', 'run'] });
describeLifecycle({ name: 'tsgi nginx run --workers 2', server: 'nginx', mode: 'workers', command: ['nginx', 'run'], args: ['--workers', '2'], workers: true });
