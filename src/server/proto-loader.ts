/**
 * Loads the public API protos (proto/tessera/v1) with @grpc/proto-loader. The same package definition
 * serves the gRPC services and server reflection.
 *
 * Load options, and why:
 * - keepCase: true. Field names stay snake_case as written in the .proto files. With camelCase,
 *   protobufjs renames the fields inside the descriptors too, so reflection would advertise names
 *   (`requestId`) that no generated client in another language uses. Handlers convert at the edge
 *   (validate.ts, to-proto.ts).
 * - longs: String. uint64 values (`sampling.seed`, byte sizes) arrive as decimal strings, so a seed
 *   above 2^53 is seen exactly and rejected with its value instead of being silently rounded.
 *   Outgoing uint64 fields accept plain numbers.
 * - enums: String. Enum values are their names (`FINISH_REASON_EOS`), the same on the way out.
 * - defaults: true. Unset scalars and repeated fields read as 0 / '' / false / []; fields marked proto3
 *   `optional` stay undefined when unset (so an unset temperature differs from 0), and unset messages
 *   read as null.
 * - oneofs: true. A oneof also reads as the name of its set member (`prompt: 'text'`).
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Root directory of the proto tree (holds tessera/v1/*.proto). */
export const PROTO_ROOT_DIR = fileURLToPath(new URL('../../proto', import.meta.url));

/** Public API files, relative to PROTO_ROOT_DIR. */
export const PUBLIC_PROTO_FILES: readonly string[] = ['tessera/v1/generation.proto', 'tessera/v1/adapters.proto'];

export const GENERATION_SERVICE_NAME = 'tessera.v1.Generation';
export const ADAPTERS_SERVICE_NAME = 'tessera.v1.Adapters';

export const PROTO_LOAD_OPTIONS: Readonly<protoLoader.Options> = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT_DIR],
});

export interface PublicApi {
  /** For grpc.loadPackageDefinition and @grpc/reflection. */
  packageDefinition: protoLoader.PackageDefinition;
  generationService: grpc.ServiceDefinition;
  adaptersService: grpc.ServiceDefinition;
}

let cached: PublicApi | null = null;

/** Loads (once per process) and returns the public API definitions. */
export function loadPublicApi(): PublicApi {
  if (cached) return cached;
  const packageDefinition = protoLoader.loadSync([...PUBLIC_PROTO_FILES], PROTO_LOAD_OPTIONS);
  cached = {
    packageDefinition,
    generationService: packageDefinition[GENERATION_SERVICE_NAME] as grpc.ServiceDefinition,
    adaptersService: packageDefinition[ADAPTERS_SERVICE_NAME] as grpc.ServiceDefinition,
  };
  return cached;
}
