/**
 * Adapters from async functions to grpc-js handlers: a handler returns its reply or throws; the thrown
 * value becomes a status through status.ts (once), is counted in tessera_errors, and goes to the client.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../telemetry/logger.ts';
import type { TesseraInstruments } from '../telemetry/metrics.ts';
import { grpcStatusName, toStatusReply, type StatusReply } from './status.ts';

export interface HandlerDeps {
  logger: Logger;
  metrics: TesseraInstruments | null;
}

/**
 * A status already converted, logged and counted in tessera_errors_total by the code that knew the request id
 * (generation-run.ts); the wrappers below send it without counting it again.
 */
export class RepliedError extends Error {
  constructor(readonly reply: StatusReply) {
    super(reply.details);
    this.name = 'RepliedError';
  }
}

function replyOf(err: unknown, deps: HandlerDeps): StatusReply {
  if (err instanceof RepliedError) return err.reply;
  const reply = toStatusReply(err, { logger: deps.logger });
  deps.metrics?.errors.add(1, { code: grpcStatusName(reply.code), error_code: reply.errorCode });
  return reply;
}

export function unaryHandler<Req, Res>(deps: HandlerDeps, fn: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call).then(
      (res) => callback(null, res),
      (err: unknown) => {
        const reply = replyOf(err, deps);
        callback({ code: reply.code, details: reply.details, metadata: reply.metadata });
      },
    );
  };
}

export function serverStreamHandler<Req, Res>(
  deps: HandlerDeps,
  fn: (call: grpc.ServerWritableStream<Req, Res>) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    fn(call).then(
      () => call.end(),
      (err: unknown) => {
        const reply = replyOf(err, deps);
        if (call.cancelled || call.destroyed) return;
        call.emit('error', { code: reply.code, details: reply.details, metadata: reply.metadata });
      },
    );
  };
}
