/**
 * A strict structural check of protobuf wire bytes against the request message's schema, run before protobufjs
 * decodes them. protobufjs is lenient where the wire format is not:
 *   - its Node Buffer reader clamps a string's declared length to the end of the buffer (`1a 7f 61` decodes as
 *     text "a" although 127 bytes were announced);
 *   - a nested message, a string inside it or a packed list may run past the end of its enclosing field: the
 *     decoder stops at the enclosing end without noticing that the last field overran it;
 *   - a known field sent with another wire type is decoded with the schema's type anyway;
 *   - invalid UTF-8 in a `string` field becomes U+FFFD.
 * The check walks every field once, recursing into nested messages, and rejects anything a conforming parser
 * would: truncated varints and fields, lengths past the enclosing end, field number 0, groups and reserved wire
 * types, wire types that do not match a known field, invalid UTF-8 in `string` fields. Unknown fields are skipped
 * (after the same bounds checks), as proto3 requires. Cost: one pass over the bytes (strings checked natively).
 */
import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs';
import descriptorExt from 'protobufjs/ext/descriptor/index.js';

/** Wire types: varint, 64-bit, length-delimited, 32-bit. */
type WireType = 0 | 1 | 2 | 5;

interface FieldRule {
  name: string;
  wireType: WireType;
  /** Repeated scalar numeric fields may also arrive packed (wire type 2) holding values of this wire type. */
  packedOf: WireType | null;
  utf8: boolean;
  /** Nested message schema (resolved lazily: schemas may be recursive). */
  message: (() => WireSchema) | null;
}

export interface WireSchema {
  readonly typeName: string;
  readonly fields: ReadonlyMap<number, FieldRule>;
}

const SCALAR_WIRE_TYPES: Readonly<Record<string, WireType>> = {
  double: 1,
  float: 5,
  int32: 0,
  int64: 0,
  uint32: 0,
  uint64: 0,
  sint32: 0,
  sint64: 0,
  bool: 0,
  fixed32: 5,
  sfixed32: 5,
  fixed64: 1,
  sfixed64: 1,
  string: 2,
  bytes: 2,
};

// protobufjs's descriptor extension: its .d.ts does not declare the message types it exports.
const descriptor = descriptorExt as unknown as { FileDescriptorProto: protobuf.Type };

/** A resolved protobufjs Root built from the serialized FileDescriptorProtos @grpc/proto-loader attaches to a type. */
export function rootFromFileDescriptors(fileDescriptorProtos: readonly Uint8Array[]): protobuf.Root {
  const file = fileDescriptorProtos.map((bytes) => descriptor.FileDescriptorProto.decode(bytes));
  const root = (protobuf.Root as unknown as { fromDescriptor(set: { file: unknown[] }): protobuf.Root }).fromDescriptor({ file });
  root.resolveAll();
  return root;
}

/** The wire schema of `type` (nested message types included). */
export function wireSchemaOf(type: protobuf.Type): WireSchema {
  const cache = new Map<string, WireSchema>();
  const build = (t: protobuf.Type): WireSchema => {
    const known = cache.get(t.fullName);
    if (known) return known;
    const fields = new Map<number, FieldRule>();
    const schema: WireSchema = { typeName: t.fullName.replace(/^\./, ''), fields };
    cache.set(t.fullName, schema);
    for (const field of t.fieldsArray) fields.set(field.id, ruleOf(field, build));
    return schema;
  };
  return build(type);
}

function ruleOf(field: protobuf.Field, build: (t: protobuf.Type) => WireSchema): FieldRule {
  field.resolve();
  if (field instanceof protobuf.MapField) {
    // A map field is a repeated message { key = 1; value = 2; }.
    const entry: WireSchema = {
      typeName: `${field.fullName}Entry`,
      fields: new Map([
        [1, scalarRule('key', field.keyType, false)],
        [2, field.resolvedType instanceof protobuf.Type ? messageRule('value', field.resolvedType, build) : scalarOrEnumRule('value', field, false)],
      ]),
    };
    return { name: field.name, wireType: 2, packedOf: null, utf8: false, message: () => entry };
  }
  if (field.resolvedType instanceof protobuf.Type) return messageRule(field.name, field.resolvedType, build);
  return scalarOrEnumRule(field.name, field, field.repeated);
}

function messageRule(name: string, type: protobuf.Type, build: (t: protobuf.Type) => WireSchema): FieldRule {
  let schema: WireSchema | null = null;
  return { name, wireType: 2, packedOf: null, utf8: false, message: () => (schema ??= build(type)) };
}

function scalarOrEnumRule(name: string, field: protobuf.Field, repeated: boolean): FieldRule {
  if (field.resolvedType instanceof protobuf.Enum) return { name, wireType: 0, packedOf: repeated ? 0 : null, utf8: false, message: null };
  return scalarRule(name, field.type, repeated);
}

function scalarRule(name: string, type: string, repeated: boolean): FieldRule {
  const wireType = SCALAR_WIRE_TYPES[type];
  if (wireType === undefined) throw new Error(`wire check: field ${name} has unsupported type ${type}`);
  return { name, wireType, packedOf: repeated && wireType !== 2 ? wireType : null, utf8: type === 'string', message: null };
}

/** Deepest message nesting accepted (the public protos nest 3 deep). */
const MAX_DEPTH = 32;

/**
 * Checks `bytes` as one message of `schema`. Returns null when well-formed, else why not (for the client: field
 * number and name, offset, what was wrong).
 */
export function checkWireFormat(bytes: Uint8Array, schema: WireSchema): string | null {
  return checkMessage(bytes, 0, bytes.length, schema, 0);
}

/** End offset of the varint at `pos` (exclusive), or -1 when it is truncated or longer than 10 bytes. */
function varintEnd(b: Uint8Array, pos: number, end: number): number {
  for (let i = 0; i < 10 && pos + i < end; i++) if ((b[pos + i] & 0x80) === 0) return pos + i + 1;
  return -1;
}

/** Value of a varint of at most 5 bytes known to end at `next` (tags and lengths; larger ones are reported). */
function smallVarint(b: Uint8Array, pos: number, next: number): number {
  if (next - pos > 5) return Number.MAX_SAFE_INTEGER;
  let v = 0;
  for (let i = pos, shift = 1; i < next; i++, shift *= 128) v += (b[i] & 0x7f) * shift;
  return v;
}

function checkMessage(b: Uint8Array, start: number, end: number, schema: WireSchema, depth: number): string | null {
  if (depth > MAX_DEPTH) return `messages nested deeper than ${MAX_DEPTH}`;
  let pos = start;
  while (pos < end) {
    const tagEnd = varintEnd(b, pos, end);
    if (tagEnd < 0) return `truncated field tag at byte ${pos} of ${schema.typeName}`;
    const tag = smallVarint(b, pos, tagEnd);
    const fieldNumber = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (fieldNumber === 0 || fieldNumber > 0x1fffffff) return `invalid field number ${fieldNumber} at byte ${pos} of ${schema.typeName}`;
    const rule = schema.fields.get(fieldNumber);
    const what = `field ${fieldNumber}${rule ? ` (${rule.name})` : ''} of ${schema.typeName}`;
    pos = tagEnd;
    if (rule && wireType !== rule.wireType && !(wireType === 2 && rule.packedOf !== null)) {
      return `${what} has wire type ${wireType}, expected ${rule.wireType}`;
    }
    switch (wireType) {
      case 0: {
        const next = varintEnd(b, pos, end);
        if (next < 0) return `${what}: truncated varint at byte ${pos}`;
        pos = next;
        break;
      }
      case 1:
      case 5: {
        const size = wireType === 1 ? 8 : 4;
        if (pos + size > end) return `${what}: ${size}-byte value runs past the end (${end - pos} bytes left)`;
        pos += size;
        break;
      }
      case 2: {
        const lenEnd = varintEnd(b, pos, end);
        if (lenEnd < 0) return `${what}: truncated length at byte ${pos}`;
        const length = smallVarint(b, pos, lenEnd);
        pos = lenEnd;
        if (length > end - pos) return `${what}: length ${length} runs past the end (${end - pos} bytes left)`;
        const problem = rule ? checkDelimited(b, pos, pos + length, rule, what, depth) : null;
        if (problem !== null) return problem;
        pos += length;
        break;
      }
      default:
        return `${what} has wire type ${wireType} (groups and reserved wire types are not accepted)`;
    }
  }
  return null;
}

function checkDelimited(b: Uint8Array, start: number, end: number, rule: FieldRule, what: string, depth: number): string | null {
  if (rule.message) return checkMessage(b, start, end, rule.message(), depth + 1);
  if (rule.utf8) return isUtf8(b.subarray(start, end)) ? null : `${what} is not valid UTF-8`;
  if (rule.packedOf === 0) {
    for (let pos = start; pos < end; ) {
      const next = varintEnd(b, pos, end);
      if (next < 0) return `${what}: packed varint truncated at byte ${pos}`;
      pos = next;
    }
    return null;
  }
  if (rule.packedOf !== null) {
    const size = rule.packedOf === 1 ? 8 : 4;
    return (end - start) % size === 0 ? null : `${what}: packed length ${end - start} is not a multiple of ${size}`;
  }
  return null; // bytes
}
