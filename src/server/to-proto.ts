/** Domain -> proto conversions at the server edge. */
import type { FinishReason, GeneratedToken } from '../engine/request.ts';
import type { AdapterState, AdapterStatus, AdapterTier } from './backend.ts';
import type { AdapterInfo as AdapterInfoMsg } from '../gen/tessera/v1/AdapterInfo.ts';
import type { AdapterState__Output as AdapterStateName } from '../gen/tessera/v1/AdapterState.ts';
import type { AdapterTier__Output as AdapterTierName } from '../gen/tessera/v1/AdapterTier.ts';
import type { FinishReason__Output as FinishReasonName } from '../gen/tessera/v1/FinishReason.ts';
import type { TokenLogprob as TokenLogprobMsg } from '../gen/tessera/v1/TokenLogprob.ts';

const FINISH_REASONS: Readonly<Record<FinishReason, FinishReasonName>> = {
  length: 'FINISH_REASON_LENGTH',
  stop: 'FINISH_REASON_STOP',
  eos: 'FINISH_REASON_EOS',
  cancelled: 'FINISH_REASON_CANCELLED',
  error: 'FINISH_REASON_ERROR',
  deadline: 'FINISH_REASON_DEADLINE',
};

const ADAPTER_STATES: Readonly<Record<AdapterState, AdapterStateName>> = {
  registered: 'ADAPTER_STATE_REGISTERED',
  fetching: 'ADAPTER_STATE_FETCHING',
  cached: 'ADAPTER_STATE_CACHED',
  decoding: 'ADAPTER_STATE_DECODING',
  resident: 'ADAPTER_STATE_RESIDENT',
  evicted: 'ADAPTER_STATE_EVICTED',
  failed: 'ADAPTER_STATE_FAILED',
};

const ADAPTER_TIERS: Readonly<Record<AdapterTier, AdapterTierName>> = {
  source: 'ADAPTER_TIER_SOURCE',
  host: 'ADAPTER_TIER_HOST',
  device: 'ADAPTER_TIER_DEVICE',
};

export function finishReasonToProto(reason: FinishReason): FinishReasonName {
  return FINISH_REASONS[reason] ?? 'FINISH_REASON_UNSPECIFIED';
}

export function logprobsToProto(tokens: readonly GeneratedToken[]): TokenLogprobMsg[] {
  return tokens.map((t) => ({ token_id: t.tokenId, logprob: t.logprob, top: t.top.map((a) => ({ token_id: a.tokenId, logprob: a.logprob })) }));
}

export function adapterStatusToProto(a: AdapterStatus): AdapterInfoMsg {
  return {
    adapter_id: a.adapterId,
    state: ADAPTER_STATES[a.state] ?? 'ADAPTER_STATE_UNSPECIFIED',
    tier: ADAPTER_TIERS[a.tier] ?? 'ADAPTER_TIER_UNSPECIFIED',
    rank: a.rank,
    size_bytes: a.sizeBytes,
    version: a.version,
    tenant: a.tenantId ?? '',
    source: a.source,
    compressed_size_bytes: a.compressedSizeBytes,
    decompressed_size_bytes: a.decompressedSizeBytes,
    pinned: a.pinned,
    error: a.error ?? '',
  };
}
