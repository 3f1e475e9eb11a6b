import { describe, expect, it } from 'vitest';
import { decodeControllerFrame, encodeControllerMessage, shardServiceClient } from './shard-grpc.ts';
import type { ShardSpec } from './wire.ts';

/** A controller message through the real protobuf bytes, as a remote worker receives it. */
function overTheWire(spec: ShardSpec): ShardSpec {
  const connect = shardServiceClient().service.Connect;
  const bytes = connect.requestSerialize(encodeControllerMessage({ type: 'init', id: 7, spec }));
  const decoded = decodeControllerFrame(connect.requestDeserialize(bytes) as Record<string, unknown>);
  if (decoded.type !== 'init') throw new Error(`decoded a ${decoded.type} frame`);
  return decoded.spec;
}

describe('tessera.shard.v1 init frame', () => {
  const spec: ShardSpec = {
    modelDir: '/models/small',
    position: { stage: 1, numStages: 2, layerStart: 15, layerEnd: 30, tpRank: 0, tpSize: 1 },
    numKvBlocks: 512,
    blockSizeTokens: 16,
    numAdapterSlots: 9,
    maxAdapterRank: 16,
    device: 'cpu',
    intraOpThreads: 2,
    runnerKind: 'host-kv',
  };

  it('carries the shard spec, thread settings included, to a remote worker', () => {
    expect(overTheWire(spec)).toEqual(spec);
    expect(overTheWire({ ...spec, intraOpSpinning: false })).toEqual({ ...spec, intraOpSpinning: false });
    const { intraOpThreads: _, ...noThreads } = spec;
    expect(overTheWire(noThreads)).toEqual(noThreads);
  });
});
