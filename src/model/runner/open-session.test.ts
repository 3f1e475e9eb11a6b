import { describe, expect, it } from 'vitest';
import { runnerSessionOptions, withExternalWeightsIn } from './open-session.ts';

describe('runner session options', () => {
  it('intra-op threads spin between kernels unless told to sleep', () => {
    expect(runnerSessionOptions('cpu').extra).toEqual({ session: { intra_op: { allow_spinning: '1' } } });
    expect(runnerSessionOptions('cpu', { intraOpThreads: 2, intraOpSpinning: false })).toMatchObject({ intraOpNumThreads: 2, extra: { session: { intra_op: { allow_spinning: '0' } } } });
  });

  it('a graph loaded from memory keeps the thread settings beside its external weights folder', () => {
    const options = withExternalWeightsIn(runnerSessionOptions('cpu'), '/models/small');
    expect(options.extra).toEqual({ session: { intra_op: { allow_spinning: '1' }, model_external_initializers_file_folder_path: '/models/small' } });
  });
});
