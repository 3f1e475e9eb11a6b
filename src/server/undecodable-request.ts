/**
 * Requests whose bytes are not a valid protobuf message of the method's request type. grpc-js answers a
 * deserializer that throws with INTERNAL, which tells the client "our fault" for what is a client error.
 * Here the deserializer never throws: it returns a marker, and the handler wrapper answers the marker with
 * INVALID_ARGUMENT (and the `tessera-error-code` trailer) before the real handler runs.
 */
import type * as grpc from '@grpc/grpc-js';
import { TesseraError } from '../errors.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { grpcStatusName, toStatusReply } from './status.ts';

const UNDECODABLE = Symbol('undecodable request');

interface Undecodable {
  [UNDECODABLE]: string;
}

function isUndecodable(request: unknown): request is Undecodable {
  return typeof request === 'object' && request !== null && UNDECODABLE in request;
}

export interface UndecodableOptions {
  metrics?: TesseraInstruments | null;
}

/**
 * The service definition with non-throwing request deserializers, and the implementation with every unary and
 * server-streaming handler answering undecodable requests with INVALID_ARGUMENT. Pass both to `server.addService`.
 */
export function rejectUndecodableRequests(
  service: grpc.ServiceDefinition,
  impl: grpc.UntypedServiceImplementation,
  opts: UndecodableOptions = {},
): { service: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
  const outService: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const outImpl: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(service) as Array<[string, grpc.MethodDefinition<unknown, unknown>]>) {
    const handler = impl[name];
    if (method.requestStream || handler === undefined) {
      outService[name] = method;
      if (handler !== undefined) outImpl[name] = handler;
      continue;
    }
    const decode = method.requestDeserialize;
    outService[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch (err) {
          return { [UNDECODABLE]: err instanceof Error ? err.message : String(err) } satisfies Undecodable;
        }
      },
    };
    const replyFor = (request: Undecodable) => {
      const reply = toStatusReply(
        new TesseraError('INVALID_ARGUMENT', `request of ${method.path} is not a valid protobuf message of its request type: ${request[UNDECODABLE]}`),
      );
      opts.metrics?.errors.add(1, { code: grpcStatusName(reply.code), error_code: reply.errorCode });
      return { code: reply.code, details: reply.details, metadata: reply.metadata };
    };
    if (method.responseStream) {
      const stream = handler as grpc.handleServerStreamingCall<unknown, unknown>;
      outImpl[name] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (isUndecodable(call.request)) call.emit('error', replyFor(call.request));
        else stream(call);
      }) as grpc.handleServerStreamingCall<unknown, unknown>;
    } else {
      const unary = handler as grpc.handleUnaryCall<unknown, unknown>;
      outImpl[name] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        if (isUndecodable(call.request)) callback(replyFor(call.request));
        else unary(call, callback);
      }) as grpc.handleUnaryCall<unknown, unknown>;
    }
  }
  return { service: outService as grpc.ServiceDefinition, impl: outImpl };
}
