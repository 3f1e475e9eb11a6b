/** tessera.v1.Adapters handlers: thin, tenant-scoped calls into the backend's AdapterAdmin. */
import type * as grpc from '@grpc/grpc-js';
import { outOfRange, TesseraError } from '../errors.ts';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import type { Authenticator } from './auth.ts';
import type { AdapterAdmin } from './backend.ts';
import { tenantOf } from './call-context.ts';
import { unaryHandler } from './handler.ts';
import type { AdapterInfo as AdapterInfoMsg } from '../gen/tessera/v1/AdapterInfo.ts';
import type { GetAdapterRequest__Output as AdapterIdRequestMsg } from '../gen/tessera/v1/GetAdapterRequest.ts';
import type { LoadAdapterRequest__Output as LoadAdapterRequestMsg } from '../gen/tessera/v1/LoadAdapterRequest.ts';
import type { RequestGate } from './request-gate.ts';
import type { RequestLimits } from './request-limits.ts';
import { adapterStatusToProto } from './to-proto.ts';
import { validateAdapterId } from './validate.ts';

/** Longest accepted `source`, in characters. */
export const MAX_ADAPTER_SOURCE_LENGTH = 4096;

export interface AdaptersServiceDeps {
  adapters: AdapterAdmin | null;
  limits: RequestLimits;
  auth: Authenticator | null;
  gate: RequestGate;
  logger: Logger;
  metrics: TesseraInstruments | null;
}

export function createAdaptersHandlers(deps: AdaptersServiceDeps): grpc.UntypedServiceImplementation {
  const h = { logger: deps.logger, metrics: deps.metrics };

  /** Common prologue: open, authenticated, adapters enabled. */
  function begin(call: { metadata: grpc.Metadata }): { admin: AdapterAdmin; tenantId: string | null } {
    deps.gate.checkOpen();
    const tenantId = tenantOf(call.metadata, deps.auth);
    if (deps.adapters === null) throw new TesseraError('UNIMPLEMENTED', 'adapters are not enabled on this server');
    return { admin: deps.adapters, tenantId };
  }

  const adapterId = (msg: AdapterIdRequestMsg): string => validateAdapterId(msg.adapter_id ?? '', 'adapter_id', deps.limits, false)!;

  const LoadAdapter = unaryHandler<LoadAdapterRequestMsg, { adapter: AdapterInfoMsg }>(h, async (call) => {
    const { admin, tenantId } = begin(call);
    const id = adapterId(call.request);
    const source = call.request.source ?? '';
    if (source === '' || source.length > MAX_ADAPTER_SOURCE_LENGTH) {
      throw outOfRange('source', `a path or URL of 1 to ${MAX_ADAPTER_SOURCE_LENGTH} characters`, source.length > 64 ? `${source.slice(0, 64)}...` : source);
    }
    const status = await admin.load({ adapterId: id, source, pin: call.request.pin ?? false, tenantId });
    return { adapter: adapterStatusToProto(status) };
  });

  const UnloadAdapter = unaryHandler<AdapterIdRequestMsg, object>(h, async (call) => {
    const { admin, tenantId } = begin(call);
    await admin.unload({ adapterId: adapterId(call.request), tenantId });
    return {};
  });

  const ListAdapters = unaryHandler<object, { adapters: AdapterInfoMsg[] }>(h, async (call) => {
    const { admin, tenantId } = begin(call);
    const list = await admin.list({ tenantId });
    return { adapters: [...list].sort((a, b) => (a.adapterId < b.adapterId ? -1 : a.adapterId > b.adapterId ? 1 : 0)).map(adapterStatusToProto) };
  });

  const GetAdapter = unaryHandler<AdapterIdRequestMsg, { adapter: AdapterInfoMsg }>(h, async (call) => {
    const { admin, tenantId } = begin(call);
    return { adapter: adapterStatusToProto(await admin.get({ adapterId: adapterId(call.request), tenantId })) };
  });

  return { LoadAdapter, UnloadAdapter, ListAdapters, GetAdapter } as grpc.UntypedServiceImplementation;
}
