// Writes src/gen/ (git-ignored): TypeScript types of the public API messages (src/server/proto-codegen.ts).
import { GENERATED_TYPES_DIR, generateProtoTypes } from '../src/server/proto-codegen.ts';

generateProtoTypes();
console.log(`wrote ${GENERATED_TYPES_DIR}`);
