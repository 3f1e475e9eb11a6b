import { describe, expect, it } from 'vitest';
import { runnerSessionOptions, withExternalWeightsIn } from './open-session.ts';

describe('runner session options', () => {
  it('intra-op threads sleep between kernels unless spinning is asked for', () => {
    expect(runnerSessionOptions('cpu').extra).toEqual({ session: { intra_op: { allow_spinning: '0' } } });
    expect(runnerSessionOptions('cpu', { intraOpThreads: 2, intraOpSpinning: true })).toMatchObject({ intraOpNumThreads: 2, extra: { session: { intra_op: { allow_spinning: '1' } } } });
  });

  it('a graph loaded from memory keeps the thread settings beside its external weights folder', () => {
    const options = withExternalWeightsIn(runnerSessionOptions('cpu'), '/models/small');
    expect(options.extra).toEqual({ session: { intra_op: { allow_spinning: '0' }, model_external_initializers_file_folder_path: '/models/small' } });
  });
});
