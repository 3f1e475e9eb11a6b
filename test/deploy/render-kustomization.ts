/**
 * A small, strict renderer for the Kustomize features deploy/kubernetes uses: `resources` (files and directories with
 * their own kustomization), `images` (newName/newTag), `patches` with inline RFC 6902 JSON patches and a kind/name
 * target, and `configMapGenerator` from files with the name hash disabled. Anything else throws, so a manifest that
 * starts using another feature fails the test until the renderer (or a real `kustomize build`) covers it.
 * When kubectl is on the PATH the test compares this output with `kubectl kustomize`.
 */
import { readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type K8sObject = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const KNOWN_KEYS = new Set(['apiVersion', 'kind', 'resources', 'images', 'patches', 'configMapGenerator']);

/** Every YAML document of a file, parsed; throws on any YAML error. */
export function readYamlObjects(file: string): K8sObject[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { prettyErrors: true });
  const out: K8sObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) continue;
    out.push(value as K8sObject);
  }
  return out;
}

/** The objects `kustomize build dir` would print (order: resources in listed order, then generated ConfigMaps). */
export function renderKustomization(dir: string): K8sObject[] {
  const [k] = readYamlObjects(join(dir, 'kustomization.yaml'));
  for (const key of Object.keys(k)) {
    if (!KNOWN_KEYS.has(key)) throw new Error(`${dir}/kustomization.yaml: "${key}" is not supported by this renderer`);
  }
  let objects: K8sObject[] = [];
  for (const res of (k.resources ?? []) as string[]) {
    const path = join(dir, res);
    objects.push(...(statSync(path).isDirectory() ? renderKustomization(path) : readYamlObjects(path)));
  }
  for (const gen of (k.configMapGenerator ?? []) as K8sObject[]) {
    if (gen.options?.disableNameSuffixHash !== true) throw new Error(`${dir}: configMapGenerator ${gen.name} must set options.disableNameSuffixHash`);
    const data: Record<string, string> = {};
    for (const file of gen.files as string[]) data[basename(file)] = readFileSync(join(dir, file), 'utf8');
    objects.push({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: gen.name }, data });
  }
  for (const patch of (k.patches ?? []) as K8sObject[]) {
    const targets = objects.filter((o) => o.kind === patch.target?.kind && o.metadata?.name === patch.target?.name);
    if (targets.length !== 1) throw new Error(`${dir}: patch target ${JSON.stringify(patch.target)} matches ${targets.length} objects`);
    const ops = readOps(patch.patch as string, dir);
    objects = objects.map((o) => (o === targets[0] ? applyJsonPatch(o, ops) : o));
  }
  for (const image of (k.images ?? []) as K8sObject[]) {
    let used = 0;
    for (const o of objects) for (const c of containersOf(o)) {
      const [name] = splitImage(c.image as string);
      if (name !== image.name) continue;
      c.image = `${image.newName ?? name}${image.newTag ? `:${image.newTag}` : ''}`;
      used++;
    }
    if (used === 0) throw new Error(`${dir}: image ${image.name} matches no container`);
  }
  return objects;
}

function readOps(text: string, where: string): JsonPatchOp[] {
  const docs = parseAllDocuments(text);
  if (docs.length !== 1 || docs[0].errors.length > 0) throw new Error(`${where}: a patch must be one YAML list of JSON-patch operations`);
  const ops = docs[0].toJS() as JsonPatchOp[];
  if (!Array.isArray(ops)) throw new Error(`${where}: only RFC 6902 (list) patches are supported`);
  return ops;
}

function splitImage(image: string): [string, string | null] {
  const at = image.lastIndexOf(':');
  return at > image.lastIndexOf('/') ? [image.slice(0, at), image.slice(at + 1)] : [image, null];
}

/** Containers (and init containers) of a workload's pod templates, wherever the template sits. */
export function podTemplatesOf(o: K8sObject): Array<{ path: string; template: K8sObject }> {
  if (o.kind === 'Deployment' || o.kind === 'StatefulSet' || o.kind === 'DaemonSet' || o.kind === 'Job') return [{ path: 'spec.template', template: o.spec.template }];
  if (o.kind === 'LeaderWorkerSet') {
    const t = o.spec.leaderWorkerTemplate;
    return [
      ...(t.leaderTemplate ? [{ path: 'spec.leaderWorkerTemplate.leaderTemplate', template: t.leaderTemplate }] : []),
      { path: 'spec.leaderWorkerTemplate.workerTemplate', template: t.workerTemplate },
    ];
  }
  return [];
}

function containersOf(o: K8sObject): K8sObject[] {
  return podTemplatesOf(o).flatMap(({ template }) => [...(template.spec.initContainers ?? []), ...template.spec.containers]);
}

export interface JsonPatchOp {
  op: 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}

/** RFC 6902 add/replace/remove on a deep copy (JSON pointers with ~0/~1 escapes; `-` appends to an array). */
export function applyJsonPatch(doc: K8sObject, ops: JsonPatchOp[]): K8sObject {
  const out = structuredClone(doc);
  for (const { op, path, value } of ops) {
    const keys = path.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = keys.pop();
    if (last === undefined) throw new Error(`patch path "${path}" is empty`);
    let parent: any = out; // eslint-disable-line @typescript-eslint/no-explicit-any
    for (const key of keys) {
      if (parent === null || typeof parent !== 'object' || !(key in parent)) throw new Error(`patch path "${path}": "${key}" does not exist`);
      parent = parent[key];
    }
    if (Array.isArray(parent)) {
      const index = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > parent.length || (op !== 'add' && index >= parent.length)) throw new Error(`patch path "${path}": index ${last} out of range`);
      if (op === 'add') parent.splice(index, 0, structuredClone(value));
      else if (op === 'replace') parent[index] = structuredClone(value);
      else parent.splice(index, 1);
    } else {
      if (op !== 'add' && !(last in parent)) throw new Error(`patch path "${path}": "${last}" does not exist (op ${op})`);
      if (op === 'remove') delete parent[last];
      else parent[last] = structuredClone(value);
    }
  }
  return out;
}
