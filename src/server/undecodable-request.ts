/**
 * Requests whose bytes are not a valid protobuf message of the method's request type. grpc-js answers a
 * deserializer that throws with INTERNAL, which tells the client "our fault" for what is a client error.
 * Here the deserializer never throws: it returns a marker, and the handler wrapper answers the marker with
 * INVALID_ARGUMENT (and the `tessera-error-code` trailer) before the real handler runs. Before decoding, the
 * bytes pass a strict wire-format check (wire-check.ts): protobufjs alone accepts truncated strings and fields
 * that overrun their enclosing message.
 */
import type * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { TesseraError } from '../errors.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { grpcStatusName, toStatusReply } from './status.ts';
import { checkWireFormat, rootFromFileDescriptors, wireSchemaOf, type WireSchema } from './wire-check.ts';

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
  const roots = new Map<readonly Uint8Array[], protobuf.Root>();
  for (const [name, method] of Object.entries(service) as Array<[string, grpc.MethodDefinition<unknown, unknown>]>) {
    // Services loaded by @grpc/proto-loader are implemented under their camelCase name (grpc-health-check: `check`).
    const handler = impl[name] ?? (method.originalName !== undefined ? impl[method.originalName] : undefined);
    if (method.requestStream || handler === undefined) {
      outService[name] = method;
      if (handler !== undefined) outImpl[name] = handler;
      continue;
    }
    const schema = requestSchemaOf(method, roots);
    const decode = method.requestDeserialize;
    outService[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        const problem = checkWireFormat(bytes, schema);
        if (problem !== null) return { [UNDECODABLE]: problem } satisfies Undecodable;
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

/** The wire schema of a proto-loader method's request type, from the file descriptors proto-loader attaches. */
function requestSchemaOf(method: grpc.MethodDefinition<unknown, unknown>, roots: Map<readonly Uint8Array[], protobuf.Root>): WireSchema {
  const files = (method as { requestType?: { fileDescriptorProtos?: readonly Uint8Array[] } }).requestType?.fileDescriptorProtos;
  const match = /^\/(.+)\/([^/]+)$/.exec(method.path);
  if (files === undefined || match === null) throw new Error(`${method.path}: no file descriptors to check request bytes against (load the service with @grpc/proto-loader)`);
  let root = roots.get(files);
  if (root === undefined) {
    root = rootFromFileDescriptors(files);
    roots.set(files, root);
  }
  const requestType = root.lookupService(match[1]).methods[match[2]]?.resolvedRequestType;
  if (!requestType) throw new Error(`${method.path}: request type not found in its file descriptors`);
  return wireSchemaOf(requestType);
}
