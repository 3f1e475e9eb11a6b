/**
 * A small in-memory ONNX graph: named values, nodes, initializers, inputs and outputs. Kernels add subgraphs to it;
 * src/model/graph serialises it to the ONNX protobuf format. Plain data only, no protobuf here.
 */

export type ElemType = 'float32' | 'float16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

/** ONNX TensorProto.DataType numbers. */
export const ONNX_DATA_TYPE: Record<ElemType, number> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
};

export type AttrValue = { i: number } | { f: number } | { s: string } | { ints: number[] } | { floats: number[] };

export interface NodeDef {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Record<string, AttrValue>;
}

export interface InitializerDef {
  name: string;
  type: ElemType;
  dims: number[];
  /** Raw little-endian element bytes. */
  bytes: Uint8Array;
}

export interface ValueDef {
  name: string;
  type: ElemType;
  /** Numbers are fixed sizes, strings are symbolic (dynamic) dimensions. */
  dims: Array<number | string>;
}

export const MS_DOMAIN = 'com.microsoft';

function viewBytes(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export class OnnxGraph {
  readonly nodes: NodeDef[] = [];
  readonly inputs: ValueDef[] = [];
  readonly outputs: ValueDef[] = [];
  private readonly initializerMap = new Map<string, InitializerDef>();
  private readonly usedNames = new Set<string>();
  private counter = 0;

  constructor(readonly name: string) {}

  get initializers(): InitializerDef[] {
    return [...this.initializerMap.values()];
  }

  /** A value name not used yet, derived from a readable hint. */
  fresh(hint: string): string {
    let name = hint;
    while (this.usedNames.has(name)) name = `${hint}_${++this.counter}`;
    this.usedNames.add(name);
    return name;
  }

  input(name: string, type: ElemType, dims: Array<number | string>): string {
    if (this.usedNames.has(name)) throw new Error(`graph ${this.name}: duplicate value ${name}`);
    this.usedNames.add(name);
    this.inputs.push({ name, type, dims });
    return name;
  }

  output(value: string, type: ElemType, dims: Array<number | string>): void {
    this.outputs.push({ name: value, type, dims });
  }

  initializer(name: string, type: ElemType, dims: number[], data: ArrayBufferView): string {
    if (this.initializerMap.has(name)) throw new Error(`graph ${this.name}: duplicate initializer ${name}`);
    const expected = dims.reduce((a, b) => a * b, 1) * bytesPerElement(type);
    if (data.byteLength !== expected) {
      throw new Error(`initializer ${name}: ${data.byteLength} bytes for dims [${dims}] of ${type} (expected ${expected})`);
    }
    this.usedNames.add(name);
    this.initializerMap.set(name, { name, type, dims, bytes: viewBytes(data) });
    return name;
  }

  /** Shares an initializer already registered in another graph (same weights file, several graphs). */
  adoptInitializer(def: InitializerDef): string {
    if (!this.initializerMap.has(def.name)) {
      this.usedNames.add(def.name);
      this.initializerMap.set(def.name, def);
    }
    return def.name;
  }

  /** Drops an initializer no node uses any more (a graph rewrite replaced it). */
  removeInitializer(name: string): void {
    this.initializerMap.delete(name);
  }

  constInt64(hint: string, values: number[], dims: number[] = [values.length]): string {
    return this.initializer(this.fresh(hint), 'int64', dims, BigInt64Array.from(values, (v) => BigInt(v)));
  }

  constFloat(hint: string, values: number[], dims: number[] = [values.length]): string {
    return this.initializer(this.fresh(hint), 'float32', dims, Float32Array.from(values));
  }

  /** Adds a node and returns its output names. */
  node(
    opType: string,
    inputs: string[],
    options: { attrs?: Record<string, AttrValue>; domain?: string; outputs?: number | string[]; hint?: string } = {},
  ): string[] {
    const hint = options.hint ?? opType.toLowerCase();
    const outs = Array.isArray(options.outputs)
      ? options.outputs
      : Array.from({ length: options.outputs ?? 1 }, (_, i) => this.fresh(i === 0 ? hint : `${hint}_out${i}`));
    this.nodes.push({
      name: this.fresh(`node_${hint}`),
      opType,
      domain: options.domain ?? '',
      inputs,
      outputs: outs,
      attributes: options.attrs ?? {},
    });
    return outs;
  }

  /** Adds a single-output node and returns the output name. */
  op(opType: string, inputs: string[], options: { attrs?: Record<string, AttrValue>; domain?: string; hint?: string } = {}): string {
    return this.node(opType, inputs, options)[0];
  }
}

export function bytesPerElement(type: ElemType): number {
  switch (type) {
    case 'float32':
    case 'int32':
      return 4;
    case 'int64':
      return 8;
    case 'float16':
      return 2;
    case 'int8':
    case 'uint8':
    case 'bool':
      return 1;
  }
}
