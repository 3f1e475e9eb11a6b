import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { componentLogger, createLogger } from './logger.ts';

function sink(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { stream, lines: () => chunks.join('').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) };
}

describe('logger', () => {
  it('writes JSON lines with component and request fields', () => {
    const out = sink();
    const root = createLogger({ destination: out.stream });
    componentLogger(root, 'server').info({ requestId: 'r1' }, 'request done');
    const [line] = out.lines();
    expect(line).toMatchObject({ level: 30, service: 'tessera', component: 'server', requestId: 'r1', msg: 'request done' });
    expect(typeof line.time).toBe('string');
  });

  it('honours the level and per-component trace switches', () => {
    const out = sink();
    const root = createLogger({ level: 'warn', destination: out.stream, traceComponents: ['scheduler'] });
    componentLogger(root, 'server').info('hidden');
    componentLogger(root, 'server').debug('hidden');
    componentLogger(root, 'scheduler').trace({ stepId: 4 }, 'step');
    componentLogger(root, 'server').warn('shown');
    expect(out.lines().map((l) => [l.component, l.msg])).toEqual([['scheduler', 'step'], ['server', 'shown']]);
  });

  it('serializes errors with their stack', () => {
    const out = sink();
    createLogger({ destination: out.stream }).error({ err: new Error('boom') }, 'failed');
    const err = out.lines()[0].err as { message: string; stack: string; type: string };
    expect(err.message).toBe('boom');
    expect(err.type).toBe('Error');
    expect(err.stack).toContain('logger.test.ts');
  });
});
