// The lifecycle matrix (conformance/src/lifecycle.ts) against `tsgi serve`, in one process and with workers.
import { describeLifecycle } from '@tsgi/conformance/lifecycle';

describeLifecycle({ name: 'tsgi serve', server: 'node', command: ['serve'] });
describeLifecycle({ name: 'tsgi serve --workers 2', server: 'node', mode: 'workers', command: ['serve'], args: ['--workers', '2'], workers: true });
