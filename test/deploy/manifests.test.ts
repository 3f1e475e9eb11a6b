/**
 * deploy/: every manifest parses and validates against the Kubernetes (kubernetes-models) and prometheus-operator
 * schemas, and what the manifests, the Envoy config, the dashboard and the alerts name (ports, probes, flags, env vars,
 * config keys, metric and label names, the adapter header) is what the code exposes, read from the code itself:
 * SERVE_SETTINGS and the real config loader, the worker command's spec, the metrics as the real Prometheus exporter
 * writes them, attribute keys scanned from src/, the client's adapter header constant.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { PodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { HTTPRoute } from '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { SERVE_SETTINGS, loadServeConfig, type ServeConfig } from '../../src/cli/config.ts';
import { splitFlags } from '../../src/cli/commands/serve.ts';
import { parseWorkerArgs } from '../../src/cli/commands/worker.ts';
import { shardClientSecurity, shardServerSecurity } from '../../src/cli/shard-security.ts';
import { ADAPTER_HEADER } from '../../src/loadgen/generation-client.ts';
import { hashApiKey, loadApiKeyFile } from '../../src/server/auth.ts';
import { LORA_INFO_METRIC } from '../../src/telemetry/lora-info.ts';
import { TIME_TO_FIRST_TOKEN_BUCKETS_S, startMetrics } from '../../src/telemetry/metrics.ts';
import { contextCopies, execForm, parseDockerfile, stageEnv } from './dockerfile.ts';
import { podTemplatesOf, readYamlObjects, renderKustomization, type K8sObject } from './render-kustomization.ts';

const execFileAsync = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = join(ROOT, 'deploy');
const K8S = join(DEPLOY, 'kubernetes');

/** Schema classes by apiVersion/kind; an object of any other kind fails the test (add its model here). */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
  'v1/ServiceAccount': ServiceAccount,
  'rbac.authorization.k8s.io/v1/Role': Role,
  'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'gateway.networking.k8s.io/v1/HTTPRoute': HTTPRoute,
};
const LWS_API = 'leaderworkerset.x-k8s.io/v1';
const INFERENCE_POOL_API = 'inference.networking.k8s.io/v1';

/** YAML files that are not Kubernetes objects, each checked by its own test below. */
const NON_K8S_YAML = new Set(['kubernetes/envoy/envoy.yaml', 'kubernetes/monitoring/prometheus-adapter-values.yaml', 'kubernetes/inference-gateway/epp-config.yaml']);

/** Files under `dir` (installed packages, e.g. `npm run install:cuda`'s deploy/cuda-provider/node_modules, skipped). */
function filesUnder(dir: string, ext: RegExp): string[] {
  return readdirSync(dir).filter((name) => name !== 'node_modules').flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p, ext) : ext.test(name) ? [p] : [];
  });
}

function validateObject(o: K8sObject, where: string): void {
  if (o.apiVersion === LWS_API && o.kind === 'LeaderWorkerSet') {
    validateLeaderWorkerSet(o, where);
    return;
  }
  if (o.apiVersion === INFERENCE_POOL_API && o.kind === 'InferencePool') {
    validateInferencePool(o, where);
    return;
  }
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  if (!Model) throw new Error(`${where}: no schema for ${o.apiVersion} ${o.kind}`);
  try {
    new Model(o as never).validate();
  } catch (err) {
    throw new Error(`${where}: ${o.kind} ${o.metadata?.name}: ${(err as Error).message}`);
  }
}

/** No maintained model package for the LWS CRD: check its own fields by hand and its pod templates with the core schema. */
function validateLeaderWorkerSet(o: K8sObject, where: string): void {
  const spec = o.spec;
  expect(typeof o.metadata?.name, where).toBe('string');
  expect(Number.isInteger(spec.replicas) && spec.replicas >= 0, `${where}: spec.replicas`).toBe(true);
  const t = spec.leaderWorkerTemplate;
  expect(Number.isInteger(t.size) && t.size >= 2, `${where}: leaderWorkerTemplate.size must be >= 2 (leader + workers)`).toBe(true);
  expect(['RecreateGroupOnPodRestart', 'None', 'NoneRestartPolicy', undefined]).toContain(t.restartPolicy);
  expect(['LeaderCreated', 'LeaderReady', undefined]).toContain(spec.startupPolicy);
  expect(['Shared', 'UniquePerReplica', undefined]).toContain(spec.networkConfig?.subdomainPolicy);
  for (const { path, template } of podTemplatesOf(o)) {
    try {
      new PodTemplateSpec(template).validate();
    } catch (err) {
      throw new Error(`${where}: ${path}: ${(err as Error).message}`);
    }
  }
}

/**
 * No model package for the Gateway API Inference Extension's CRDs: InferencePool v1's fields checked by hand, after
 * its published schema (selector.matchLabels, 1-8 targetPorts, endpointPickerRef with name, port, failureMode).
 */
function validateInferencePool(o: K8sObject, where: string): void {
  const spec = o.spec;
  const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
  expect(typeof o.metadata?.name, where).toBe('string');
  expect(Object.keys(spec).sort(), `${where}: spec fields`).toEqual(expect.arrayContaining(['endpointPickerRef', 'selector', 'targetPorts']));
  for (const key of Object.keys(spec)) expect(['selector', 'targetPorts', 'endpointPickerRef', 'appProtocol'], `${where}: spec.${key}`).toContain(key);
  expect(Object.keys(spec.selector), `${where}: selector`).toEqual(['matchLabels']);
  for (const v of Object.values(spec.selector.matchLabels as Record<string, string>)) expect(LABEL_VALUE.test(v), `${where}: label value ${v}`).toBe(true);
  expect(spec.targetPorts.length >= 1 && spec.targetPorts.length <= 8, `${where}: targetPorts`).toBe(true);
  for (const p of spec.targetPorts) expect(Number.isInteger(p.number) && p.number >= 1 && p.number <= 65535, `${where}: targetPorts number`).toBe(true);
  const ref = spec.endpointPickerRef;
  expect(typeof ref.name === 'string' && ref.name.length > 0, `${where}: endpointPickerRef.name`).toBe(true);
  expect(['Service', undefined]).toContain(ref.kind);
  expect(['FailOpen', 'FailClose', undefined]).toContain(ref.failureMode);
  expect(Number.isInteger(ref.port?.number) && ref.port.number >= 1 && ref.port.number <= 65535, `${where}: endpointPickerRef.port`).toBe(true);
}

/** Every TESSERA_* name that appears in src/ (SERVE_SETTINGS env vars, TESSERA_CONFIG, TESSERA_CACHE_DIR, ...). */
function envNamesInCode(): Set<string> {
  const names = new Set<string>();
  for (const file of filesUnder(join(ROOT, 'src'), /\.ts$/)) for (const m of readFileSync(file, 'utf8').matchAll(/\bTESSERA_[A-Z0-9_]+\b/g)) names.add(m[0]);
  return names;
}

/** Attribute keys the code records on instruments (`.add(x, { key: ... })`, `.record(x, { 'a.b': ... })`), as Prometheus labels. */
function labelNamesInCode(): Set<string> {
  const names = new Set<string>();
  for (const file of filesUnder(join(ROOT, 'src'), /\.ts$/)) {
    const text = readFileSync(file, 'utf8');
    for (const call of text.matchAll(/\.(?:add|record)\([^;]*?,\s*\{([^}]*)\}/g)) {
      for (const key of call[1].matchAll(/(?:^|,)\s*(?:'([^']+)'|([A-Za-z_][\w]*))\s*:/g)) names.add((key[1] ?? key[2]).replace(/\./g, '_'));
    }
  }
  return names;
}

/** Series names the real exporter writes for every instrument (histograms: _bucket/_sum/_count; counters: _total). */
async function exportedSeries(path: string): Promise<{ names: Set<string>; status: number }> {
  const metrics = await startMetrics({ port: 0, host: '127.0.0.1' });
  metrics.setLoraInfo(() => ({ maxLora: 2, running: ['a'], waiting: [] }));
  try {
    for (const inst of Object.values(metrics.instruments) as Array<{ add?: (v: number) => void; record?: (v: number) => void }>) {
      if (inst.add) inst.add(1);
      else inst.record!(1);
    }
    const res = await fetch(`http://127.0.0.1:${metrics.port}${path}`);
    const text = await res.text();
    const names = new Set<string>();
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
      if (m) names.add(m[1]);
    }
    return { names, status: res.status };
  } finally {
    await metrics.shutdown();
  }
}

const METRIC_NAME = /\b(?:tessera|gen_ai)_[a-z0-9_]+\b/g;
/** Labels Prometheus (and prometheus-operator's ServiceMonitor) attach to every scraped series. */
const TARGET_LABELS = new Set(['namespace', 'pod', 'container', 'service', 'endpoint', 'job', 'instance', 'le']);

/** Label names a PromQL expression groups by or matches on. */
function labelsIn(expr: string): string[] {
  const out: string[] = [];
  for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) out.push(...m[1].split(',').map((s) => s.trim()).filter(Boolean));
  for (const m of expr.matchAll(/\{([^}]*)\}/g)) {
    if (m[1].includes('<<') || m[1].startsWith('{')) continue; // prometheus-adapter templates, Grafana legends
    for (const matcher of m[1].matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) out.push(matcher[1]);
  }
  return out;
}

function container(template: K8sObject, name: string): K8sObject {
  const c = (template.spec.containers as K8sObject[]).find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

function cpuCores(q: string): number {
  return q.endsWith('m') ? Math.ceil(Number(q.slice(0, -1)) / 1000) : Math.ceil(Number(q));
}

/** The settings `tessera serve` would run with in this pod: image ENV < pod env, flags from args, the mounted config file. */
function effectiveServeConfig(template: K8sObject, c: K8sObject, serveArgs: string[], imageEnv: Record<string, string>, scratch: string): ServeConfig {
  const env: Record<string, string> = { ...imageEnv };
  for (const e of (c.env ?? []) as K8sObject[]) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.resourceFieldRef?.resource === 'requests.cpu') env[e.name] = String(cpuCores(String(c.resources.requests.cpu)));
    else throw new Error(`env ${e.name}: value source not understood by the test`);
  }
  const flags = splitFlags(serveArgs);
  const configPath = flags.get('config')?.at(-1);
  if (configPath) {
    const mount = (c.volumeMounts as K8sObject[]).find((m) => m.mountPath === configPath && m.subPath);
    expect(mount, `config file ${configPath} is mounted`).toBeDefined();
    const volume = (template.spec.volumes as K8sObject[]).find((v) => v.name === mount!.name);
    const cm = configMaps.get(volume!.configMap.name);
    expect(cm?.data?.[mount!.subPath], `ConfigMap ${volume!.configMap.name} has key ${mount!.subPath}`).toBeTypeOf('string');
    const local = join(scratch, `${volume!.configMap.name}-${mount!.subPath}`);
    writeFileSync(local, cm!.data[mount!.subPath]);
    flags.set('config', [local]);
  }
  return loadServeConfig(flags, env);
}

/** Checks shared by every pod that runs `tessera serve` against the settings it will run with. */
async function checkServePod(template: K8sObject, c: K8sObject, config: ServeConfig, imageEnv: Record<string, string>, where: string): Promise<void> {
  const port = (name: string) => (c.ports as K8sObject[]).find((p) => p.name === name)?.containerPort;
  expect(port('grpc'), `${where}: grpc containerPort`).toBe(config.port);
  expect(port('metrics'), `${where}: metrics containerPort`).toBe(config.metricsPort);
  expect(port('http'), `${where}: http containerPort (OpenAI-compatible face)`).toBe(config.httpPort);
  expect(config.host, `${where}: gRPC must listen on all interfaces`).toBe('0.0.0.0');
  expect(config.metricsHost, `${where}: metrics must listen on all interfaces`).toBe('0.0.0.0');
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    expect(c[kind]?.grpc, `${where}: ${kind} is a native gRPC probe`).toBeDefined();
    expect(c[kind].grpc.port, `${where}: ${kind} port`).toBe(config.port);
    expect(c[kind].grpc.service ?? '', `${where}: ${kind} checks the whole server`).toBe('');
  }
  const annotations = template.metadata.annotations ?? {};
  expect(Number(annotations['prometheus.io/port']), `${where}: scrape annotation port`).toBe(config.metricsPort);
  const preStopS = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
  expect(template.spec.terminationGracePeriodSeconds, `${where}: grace period > preStop + drain deadline`).toBeGreaterThan(preStopS + config.drainTimeoutMs / 1000);

  // Paths in the settings are on mounted volumes; the API-key file is in its Secret and loads with the real parser.
  const mountOf = (path: string) => (c.volumeMounts as K8sObject[]).find((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
  const volumeOf = (name: string) => (template.spec.volumes as K8sObject[]).find((v) => v.name === name)!;
  for (const path of [config.model!, ...config.adaptersDir]) expect(mountOf(path), `${where}: ${path} is on a volume`).toBeDefined();
  const keysMount = mountOf(config.apiKeysFile!)!;
  const secret = secrets.get(volumeOf(keysMount.name).secret.secretName)!;
  const keyName = relative(keysMount.mountPath, config.apiKeysFile!);
  const local = join(scratch, `${where.replace(/\W/g, '_')}-api-keys.json`);
  writeFileSync(local, secret.stringData[keyName]);
  expect((await loadApiKeyFile(local)).numKeys).toBeGreaterThan(0);

  // Read-only root: the cache dir and the temp dir (tsx compiles there) must be writable volumes.
  expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
  for (const path of [imageEnv.TESSERA_CACHE_DIR, '/tmp']) {
    const m = mountOf(path);
    expect(m && !m.readOnly && volumeOf(m.name).emptyDir !== undefined, `${where}: ${path} is a writable emptyDir`).toBe(true);
  }
  expect(template.spec.securityContext.runAsNonRoot).toBe(true);
}

let scratch = '';
const configMaps = new Map<string, K8sObject>();
const secrets = new Map<string, K8sObject>();
let renders: Map<string, K8sObject[]>;
let series: { names: Set<string>; status: number };

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'tessera-deploy-'));
  renders = new Map(['overlays/cpu', 'overlays/gpu', 'lws', 'envoy', 'inference-gateway'].map((d) => [d, renderKustomization(join(K8S, d))]));
  for (const objects of renders.values()) {
    for (const o of objects) {
      if (o.kind === 'ConfigMap') configMaps.set(o.metadata.name, o);
      if (o.kind === 'Secret') secrets.set(o.metadata.name, o);
    }
  }
  series = await exportedSeries('/metrics');
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const find = (objects: K8sObject[], kind: string, name: string): K8sObject => {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
};

describe('Kubernetes manifests', () => {
  it('every YAML file parses, and every object in it validates against its schema', () => {
    const files = filesUnder(DEPLOY, /\.ya?ml$/);
    expect(files.length).toBeGreaterThan(10);
    let numObjects = 0;
    for (const file of files) {
      const rel = relative(DEPLOY, file);
      const objects = readYamlObjects(file);
      expect(objects.length, rel).toBeGreaterThan(0);
      if (NON_K8S_YAML.has(rel) || objects[0].kind === 'Kustomization') continue;
      for (const o of objects) {
        validateObject(o, rel);
        numObjects++;
      }
    }
    expect(numObjects).toBeGreaterThan(12);
  });

  it('every kustomization renders to schema-valid objects without duplicates', () => {
    for (const [dir, objects] of renders) {
      const ids = objects.map((o) => `${o.kind}/${o.metadata.name}`);
      expect(new Set(ids).size, `${dir}: duplicate objects in ${ids.join(', ')}`).toBe(ids.length);
      for (const o of objects) validateObject(o, dir);
    }
  });

  it.runIf(spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0)('the renderer agrees with kubectl kustomize', async () => {
    const dirs = [...renders.keys()];
    const texts = await Promise.all(dirs.map(async (dir) => (await execFileAsync('kubectl', ['kustomize', join(K8S, dir)], { encoding: 'utf8' })).stdout));
    for (const [i, dir] of dirs.entries()) {
      const objects = renders.get(dir)!;
      const real = parseAllDocuments(texts[i]).map((d) => d.toJS() as K8sObject);
      const byId = (list: K8sObject[]) => new Map(list.map((o) => [`${o.kind}/${o.metadata.name}`, o]));
      const ours = byId(objects);
      expect([...byId(real).keys()].sort(), dir).toEqual([...ours.keys()].sort());
      for (const [id, o] of byId(real)) expect(o, `${dir}: ${id}`).toEqual(ours.get(id));
    }
  });

  it('the serve pods run with valid settings that match their ports, probes, volumes and grace period', async () => {
    const cpuImage = stageEnv(parseDockerfile(join(DEPLOY, 'docker/Dockerfile.cpu')).stages.at(-1)!);
    const gpuImage = stageEnv(parseDockerfile(join(DEPLOY, 'docker/Dockerfile.gpu')).stages.at(-1)!);
    for (const [overlay, imageEnv] of [['overlays/cpu', cpuImage], ['overlays/gpu', gpuImage]] as const) {
      const objects = renders.get(overlay)!;
      const deployment = find(objects, 'Deployment', 'tessera');
      const template = deployment.spec.template;
      const c = container(template, 'tessera');
      expect(c.args[0]).toBe('serve');
      const config = effectiveServeConfig(template, c, c.args.slice(1), imageEnv, scratch);
      await checkServePod(template, c, config, imageEnv, overlay);
      const gpus = c.resources.limits?.['nvidia.com/gpu'];
      if (overlay === 'overlays/gpu') {
        expect(config.device).toBe('cuda');
        expect(Number(gpus)).toBeGreaterThanOrEqual(1);
      } else {
        expect(config.device).toBe('cpu');
        expect(gpus).toBeUndefined();
      }
      expect(config.intraOpThreads).toBe(cpuCores(c.resources.requests.cpu));

      // Services route to the named container ports; the ServiceMonitor scrapes the metrics port of the server Service.
      const service = find(objects, 'Service', 'tessera');
      const grpcPort = (service.spec.ports as K8sObject[]).find((p) => p.name === 'grpc')!;
      expect(grpcPort.targetPort).toBe('grpc');
      expect(grpcPort.appProtocol).toBe('kubernetes.io/h2c');
      const monitor = find(objects, 'ServiceMonitor', 'tessera');
      expect(monitor.spec.selector.matchLabels).toEqual(service.metadata.labels);
      expect((service.spec.ports as K8sObject[]).map((p) => p.name)).toContain(monitor.spec.endpoints[0].port);
      for (const s of objects.filter((o) => o.kind === 'Service')) {
        const selected = Object.entries(s.spec.selector as Record<string, string>).every(([k, v]) => template.metadata.labels[k] === v);
        if (s.metadata.name.startsWith('tessera')) expect(selected, `Service ${s.metadata.name} selects the server pods`).toBe(true);
      }
      const pdb = find(objects, 'PodDisruptionBudget', 'tessera');
      expect(pdb.spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
      const hpa = find(objects, 'HorizontalPodAutoscaler', 'tessera');
      expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'tessera' });
      expect(hpa.spec.minReplicas).toBeLessThanOrEqual(hpa.spec.maxReplicas);
    }
  });

  it('env vars in manifests and images are ones the code reads', () => {
    const known = envNamesInCode();
    expect(known.has(SERVE_SETTINGS.port.env)).toBe(true);
    const used = new Set<string>();
    for (const objects of renders.values()) {
      for (const o of objects) for (const { template } of podTemplatesOf(o)) for (const c of template.spec.containers as K8sObject[]) for (const e of c.env ?? []) used.add(e.name);
    }
    for (const file of ['Dockerfile.cpu', 'Dockerfile.gpu']) {
      for (const stage of parseDockerfile(join(DEPLOY, 'docker', file)).stages) for (const name of Object.keys(stageEnv(stage))) used.add(name);
    }
    const tessera = [...used].filter((n) => n.startsWith('TESSERA_'));
    expect(tessera.length).toBeGreaterThan(3);
    for (const name of tessera) expect(known.has(name), `${name} is not read anywhere in src/`).toBe(true);
  });

  it('the API-key Secret holds the digest of the key its comment names', () => {
    const secret = secrets.get('tessera-api-keys')!;
    const file = JSON.parse(secret.stringData['api-keys.json']) as { keys: Array<{ sha256: string }> };
    const comment = readFileSync(join(K8S, 'common/secret-api-keys.yaml'), 'utf8');
    const key = /example[\s#]+key `([^`]+)`/.exec(comment)![1];
    expect(file.keys[0].sha256).toBe(hashApiKey(key));
  });
});

describe('metrics, dashboard, alerts and autoscaling', () => {
  it('the scrape path serves the metrics', async () => {
    const paths = new Set<string>();
    for (const objects of renders.values()) {
      for (const o of objects) {
        if (o.kind === 'ServiceMonitor') for (const e of o.spec.endpoints) paths.add(e.path);
        for (const { template } of podTemplatesOf(o)) if (template.metadata?.annotations?.['prometheus.io/path']) paths.add(template.metadata.annotations['prometheus.io/path']);
      }
    }
    expect(paths.size).toBeGreaterThan(0);
    for (const path of paths) expect((await exportedSeries(path)).status, path).toBe(200);
    expect(series.names.has('tessera_queue_length')).toBe(true);
  });

  it('every metric and label named in alerts, dashboard, HPA and adapter rules is exported by the code', () => {
    const exprs: Array<{ where: string; expr: string }> = [];
    const rule = find(renders.get('overlays/cpu')!, 'PrometheusRule', 'tessera');
    for (const g of rule.spec.groups) for (const r of g.rules) exprs.push({ where: `rule ${r.alert ?? r.record}`, expr: r.expr });
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana/tessera-dashboard.json'), 'utf8'));
    for (const p of dashboard.panels) for (const t of p.targets ?? []) exprs.push({ where: `panel ${p.title}`, expr: t.expr });
    for (const v of dashboard.templating.list) if (v.definition) exprs.push({ where: `variable ${v.name}`, expr: v.definition });
    const adapter = parseYaml(readFileSync(join(K8S, 'monitoring/prometheus-adapter-values.yaml'), 'utf8'));
    for (const r of adapter.rules.custom) exprs.push({ where: `adapter rule ${r.name.as}`, expr: `${r.seriesQuery} ${r.metricsQuery}` });
    const hpaMetrics = find(renders.get('overlays/cpu')!, 'HorizontalPodAutoscaler', 'tessera').spec.metrics.map((m: K8sObject) => m.pods.metric.name as string);
    for (const name of hpaMetrics) exprs.push({ where: 'HPA', expr: name });

    const labels = new Set([...labelNamesInCode(), ...TARGET_LABELS]);
    expect(labels.has('tier') && labels.has('code') && labels.has('direction')).toBe(true);
    let numNames = 0;
    for (const { where, expr } of exprs) {
      for (const [name] of expr.matchAll(METRIC_NAME)) {
        expect(series.names.has(name), `${where}: ${name} is not exported (have: ${[...series.names].join(', ')})`).toBe(true);
        numNames++;
      }
      for (const label of labelsIn(expr)) expect(labels.has(label), `${where}: label ${label} is never recorded`).toBe(true);
      for (const m of expr.matchAll(/\bcode=~?"([^"]+)"/g)) {
        for (const code of m[1].split('|')) expect(code in GrpcStatus, `${where}: ${code} is not a gRPC status name`).toBe(true);
      }
    }
    expect(numNames).toBeGreaterThan(20);

    // The HPA's metric is served by an adapter rule over the same series.
    for (const name of hpaMetrics) {
      const r = adapter.rules.custom.find((x: K8sObject) => x.name.as === name);
      expect(r, `adapter rule for ${name}`).toBeDefined();
      expect(r.seriesQuery.startsWith(`${name}{`)).toBe(true);
    }
  });

  it('alert thresholds agree with the deployed settings and the histogram buckets', () => {
    const objects = renders.get('overlays/cpu')!;
    const template = find(objects, 'Deployment', 'tessera').spec.template;
    const c = container(template, 'tessera');
    const imageEnv = stageEnv(parseDockerfile(join(DEPLOY, 'docker/Dockerfile.cpu')).stages.at(-1)!);
    const config = effectiveServeConfig(template, c, c.args.slice(1), imageEnv, scratch);
    const rules = find(objects, 'PrometheusRule', 'tessera').spec.groups.flatMap((g: K8sObject) => g.rules) as K8sObject[];
    const byName = (n: string) => rules.find((r) => r.alert === n || r.record === n)!;
    expect(rules.filter((r) => r.alert).map((r) => r.alert)).toEqual(expect.arrayContaining(['TesseraHighErrorRate', 'TesseraQueueSaturated', 'TesseraTimeToFirstTokenP99High']));
    const queue = /tessera_queue_length\)\s*\/\s*(\d+)/.exec(byName('TesseraQueueSaturated').expr);
    expect(Number(queue![1]), 'queue saturation divides by maxQueuedRequests').toBe(config.maxQueuedRequests);
    const ttft = /> *([\d.]+)\s*$/.exec(byName('TesseraTimeToFirstTokenP99High').expr.trim());
    expect(TIME_TO_FIRST_TOKEN_BUCKETS_S).toContain(Number(ttft![1]));
    expect(byName('tessera:time_to_first_token_seconds:p99_5m').expr).toContain('histogram_quantile(0.99');
  });

  it('the dashboard is well-formed: unique panel ids, panels inside the 24-column grid, a query on each panel', () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana/tessera-dashboard.json'), 'utf8'));
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    const ids = dashboard.panels.map((p: K8sObject) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const g = p.gridPos;
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++) for (let y = g.y; y < g.y + g.h; y++) {
        expect(cells.has(`${x},${y}`), `${p.title} overlaps another panel at ${x},${y}`).toBe(false);
        cells.add(`${x},${y}`);
      }
      if (p.type !== 'row') expect(p.targets.length, p.title).toBeGreaterThan(0);
    }
    expect(dashboard.templating.list.map((v: K8sObject) => v.name)).toContain('datasource');
  });
});

describe('Envoy adapter-affinity router', () => {
  const envoy = () => parseYaml(readFileSync(join(K8S, 'envoy/envoy.yaml'), 'utf8'));

  it('hashes on the header the client sends, over an HTTP/2 ring-hash cluster with gRPC health checks', () => {
    const config = envoy();
    const [listener] = config.static_resources.listeners;
    const hcm = listener.filter_chains[0].filters.find((f: K8sObject) => f.name === 'envoy.filters.network.http_connection_manager').typed_config;
    expect(hcm['@type']).toBe('type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
    expect(['HTTP2', 'AUTO']).toContain(hcm.codec_type);
    expect(hcm.http_filters.at(-1).name).toBe('envoy.filters.http.router');
    const routes = hcm.route_config.virtual_hosts.flatMap((v: K8sObject) => v.routes) as K8sObject[];
    const clusters = new Map((config.static_resources.clusters as K8sObject[]).map((c) => [c.name, c]));
    for (const route of routes) {
      expect(route.route.hash_policy).toEqual([{ header: { header_name: ADAPTER_HEADER } }]);
      const cluster = clusters.get(route.route.cluster)!;
      expect(cluster, `route to unknown cluster ${route.route.cluster}`).toBeDefined();
      expect(cluster.lb_policy).toBe('RING_HASH');
      const proto = cluster.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
      expect(proto['@type']).toBe('type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions');
      expect(proto.explicit_http_config.http2_protocol_options).toBeTypeOf('object');
      expect(cluster.health_checks[0].grpc_health_check).toEqual({ service_name: '' });
    }
    // Every typed config names an Envoy v3 API type.
    const types = JSON.stringify(config).match(/"@type":"([^"]+)"/g) ?? [];
    expect(types.length).toBeGreaterThan(2);
    for (const t of types) expect(t).toMatch(/"type\.googleapis\.com\/envoy\.[a-z0-9_.]+\.v3\.[A-Za-z]+"/);
  });

  it('points at the headless Service of the server pods, and the router Deployment mounts this file', () => {
    const cluster = envoy().static_resources.clusters[0];
    expect(cluster.type).toBe('STRICT_DNS');
    const address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
    const headless = find(renders.get('overlays/cpu')!, 'Service', address.address);
    expect(headless.spec.clusterIP).toBe('None');
    expect(headless.spec.ports.map((p: K8sObject) => p.port)).toContain(address.port_value);

    const objects = renders.get('envoy')!;
    const deployment = find(objects, 'Deployment', 'tessera-router');
    const c = deployment.spec.template.spec.containers[0];
    const configPath = c.args[c.args.indexOf('--config-path') + 1] as string;
    const mount = (c.volumeMounts as K8sObject[]).find((m) => configPath.startsWith(`${m.mountPath}/`))!;
    const volume = deployment.spec.template.spec.volumes.find((v: K8sObject) => v.name === mount.name);
    const cm = find(objects, 'ConfigMap', volume.configMap.name);
    expect(parseYaml(cm.data[relative(mount.mountPath, configPath)])).toEqual(envoy());
    const listenerPort = envoy().static_resources.listeners[0].address.socket_address.port_value;
    expect(c.ports.find((p: K8sObject) => p.name === 'grpc').containerPort).toBe(listenerPort);
  });
});

describe('Gateway API Inference Extension (InferencePool, HTTPRoute, endpoint picker)', () => {
  const objects = () => renders.get('inference-gateway')!;
  const pool = () => find(objects(), 'InferencePool', 'tessera');
  const epp = () => find(objects(), 'Deployment', 'tessera-epp');
  const eppArgs = (): Map<string, string> => {
    const args = container(epp().spec.template, 'epp').args as string[];
    const out = new Map<string, string>();
    for (let i = 0; i < args.length; i += 2) {
      expect(args[i].startsWith('--'), `EPP argument ${args[i]} is a flag followed by its value`).toBe(true);
      out.set(args[i].slice(2), args[i + 1]);
    }
    return out;
  };

  it('pools the server pods on the port of their OpenAI-compatible face', () => {
    const server = renders.get('overlays/cpu')!;
    const template = find(server, 'Deployment', 'tessera').spec.template;
    const c = container(template, 'tessera');
    const imageEnv = stageEnv(parseDockerfile(join(DEPLOY, 'docker/Dockerfile.cpu')).stages.at(-1)!);
    const config = effectiveServeConfig(template, c, c.args.slice(1), imageEnv, scratch);
    for (const [k, v] of Object.entries(pool().spec.selector.matchLabels as Record<string, string>)) expect(template.metadata.labels[k], `pool selector ${k}`).toBe(v);
    expect(pool().spec.targetPorts.map((p: K8sObject) => p.number)).toEqual([config.httpPort]);
    expect((c.ports as K8sObject[]).find((p) => p.name === 'http')!.containerPort).toBe(config.httpPort);
  });

  it('routes the OpenAI paths of the Gateway to the pool, and the pool to its endpoint picker', () => {
    const route = find(objects(), 'HTTPRoute', 'tessera');
    const backends = route.spec.rules.flatMap((r: K8sObject) => r.backendRefs);
    expect(backends).toEqual([{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: pool().metadata.name }]);
    const paths = route.spec.rules.flatMap((r: K8sObject) => r.matches.map((m: K8sObject) => m.path.value as string));
    for (const api of ['/v1/completions', '/v1/chat/completions', '/v1/models']) expect(paths.some((p: string) => api.startsWith(p)), api).toBe(true);
    const ref = pool().spec.endpointPickerRef;
    const service = find(objects(), 'Service', ref.name);
    const servicePort = (service.spec.ports as K8sObject[]).find((p) => p.port === ref.port.number)!;
    expect(servicePort, 'the picker Service exposes the referenced port').toBeDefined();
    const eppContainer = container(epp().spec.template, 'epp');
    expect((eppContainer.ports as K8sObject[]).find((p) => p.name === servicePort.targetPort)!.containerPort).toBe(Number(eppArgs().get('grpc-port')));
    for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>)) expect(epp().spec.template.metadata.labels[k]).toBe(v);
    expect(eppArgs().get('pool-name')).toBe(pool().metadata.name);
    expect(eppContainer.readinessProbe.grpc.port).toBe(Number(eppArgs().get('grpc-health-port')));
  });

  it("points the picker at Tessera's metrics, exported with the model-server protocol's types and labels", () => {
    const args = eppArgs();
    for (const flag of ['total-queued-requests-metric', 'total-running-requests-metric', 'kv-cache-usage-percentage-metric', 'lora-info-metric']) {
      expect(series.names.has(args.get(flag)!), `--${flag} ${args.get(flag)} is exported`).toBe(true);
    }
    expect(args.get('lora-info-metric')).toBe(LORA_INFO_METRIC);
  });

  it('mounts the scheduling profile, whose plugins are declared, and may read pods and pools', () => {
    const args = eppArgs();
    const template = epp().spec.template;
    const c = container(template, 'epp');
    const file = args.get('config-file')!;
    const mount = (c.volumeMounts as K8sObject[]).find((m) => file.startsWith(`${m.mountPath}/`))!;
    const volume = (template.spec.volumes as K8sObject[]).find((v) => v.name === mount.name)!;
    const cm = find(objects(), 'ConfigMap', volume.configMap.name);
    const config = parseYaml(cm.data[relative(mount.mountPath, file)]);
    expect(config.kind).toBe('EndpointPickerConfig');
    const declared = new Set((config.plugins as K8sObject[]).map((p) => p.name ?? p.type));
    for (const profile of config.schedulingProfiles) for (const p of profile.plugins) expect(declared.has(p.pluginRef), p.pluginRef).toBe(true);
    expect(declared.has('lora-affinity-scorer')).toBe(true);
    const role = find(objects(), 'Role', 'tessera-epp');
    const grants = (group: string, resource: string) => (role.rules as K8sObject[]).some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && ['get', 'list', 'watch'].every((v) => r.verbs.includes(v)));
    expect(grants('', 'pods') && grants('inference.networking.k8s.io', 'inferencepools')).toBe(true);
    const binding = find(objects(), 'RoleBinding', 'tessera-epp');
    expect(binding.subjects[0].name).toBe(template.spec.serviceAccountName);
  });
});

describe('LeaderWorkerSet shard groups', () => {
  const lws = () => find(renders.get('lws')!, 'LeaderWorkerSet', 'tessera-shards');

  /** Runs the leader's shell command with a stand-in `node` that prints its argv, under LWS's environment. */
  function leaderArgv(groupSize: number, leaderAddress: string, tp = 1): string[] {
    const leader = container(lws().spec.leaderWorkerTemplate.leaderTemplate, 'leader');
    const cmd = leader.command as string[];
    expect(cmd.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
    expect(cmd.slice(2, 4)).toEqual(['/bin/sh', '-c']);
    const bin = mkdtempSync(join(scratch, 'bin-'));
    writeFileSync(join(bin, 'node'), '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n');
    chmodSync(join(bin, 'node'), 0o755);
    const out = execFileSync('/bin/sh', ['-c', cmd[4]], { encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin`, LWS_LEADER_ADDRESS: leaderAddress, LWS_GROUP_SIZE: String(groupSize), ...(tp > 1 ? { TESSERA_TP: String(tp) } : {}) } });
    return out.trimEnd().split('\n');
  }

  it('the leader passes every worker of its group to `tessera serve --workers`', () => {
    const worker = container(lws().spec.leaderWorkerTemplate.workerTemplate, 'worker');
    const workerPort = worker.ports.find((p: K8sObject) => p.name === 'shard').containerPort;
    for (const [size, group, tp] of [[3, 0, 1], [5, 2, 2]]) {
      const argv = leaderArgv(size, `tessera-shards-${group}.tessera-shards.prod`, tp);
      expect(argv.slice(0, 2)).toEqual(['/app/bin/tessera.mjs', 'serve']);
      const flags = splitFlags(argv.slice(2));
      const workers = flags.get('workers')![0].split(',');
      expect(workers).toEqual(Array.from({ length: size - 1 }, (_, i) => `tessera-shards-${group}-${i + 1}.tessera-shards.prod:${workerPort}`));
      expect(Number(flags.get('pp')![0]) * tp, 'tp x pp = number of workers').toBe(size - 1);
    }
  });

  it('leader flags are serve settings (or the pending --pp/--workers), and the leader pod matches its settings', async () => {
    const template = lws().spec.leaderWorkerTemplate.leaderTemplate;
    const leader = container(template, 'leader');
    const serveArgs = leaderArgv(3, 'tessera-shards-0.tessera-shards.prod').slice(2);
    const flags = splitFlags(serveArgs);
    const knownFlags = new Set(Object.values(SERVE_SETTINGS).map((s) => s.flag as string));
    // `--pp`/`--workers` are the interface of the parallel-shards issue; once they are serve settings the real loader
    // checks them too.
    const pending = ['pp', 'workers'].filter((f) => !knownFlags.has(f));
    for (const flag of flags.keys()) if (flag !== 'config') expect(knownFlags.has(flag) || pending.includes(flag), `--${flag}`).toBe(true);
    for (const flag of pending) flags.delete(flag);
    const withoutPending = [...flags].flatMap(([k, vs]) => vs.flatMap((v) => [`--${k}`, v]));
    const imageEnv = stageEnv(parseDockerfile(join(DEPLOY, 'docker/Dockerfile.cpu')).stages.at(-1)!);
    const config = effectiveServeConfig(template, leader, withoutPending, imageEnv, scratch);
    await checkServePod(template, leader, config, imageEnv, 'lws leader');
    const service = find(renders.get('lws')!, 'Service', 'tessera-shards-leaders');
    for (const [k, v] of Object.entries(service.spec.selector as Record<string, string>)) expect(template.metadata.labels[k]).toBe(v);
    expect(service.metadata.name, 'must not take the name of the headless Service LWS creates').not.toBe(lws().metadata.name);
  });

  it('workers run `tessera worker` with flags its spec knows, listening on the port the leader dials', () => {
    const template = lws().spec.leaderWorkerTemplate.workerTemplate;
    const worker = container(template, 'worker');
    expect(worker.args[0]).toBe('worker');
    const listen = parseWorkerArgs(worker.args.slice(1)).listen;
    expect(listen.startsWith('0.0.0.0:')).toBe(true);
    const port = Number(listen.split(':')[1]);
    expect(worker.ports.find((p: K8sObject) => p.name === 'shard').containerPort).toBe(port);
    expect(worker.readinessProbe.tcpSocket.port).toBe(port);
    // The leader hands workers a model path: the same volume is mounted at the same place.
    const leader = container(lws().spec.leaderWorkerTemplate.leaderTemplate, 'leader');
    const models = (c: K8sObject) => (c.volumeMounts as K8sObject[]).find((m) => m.name === 'models')?.mountPath;
    expect(models(worker)).toBe(models(leader));
    expect(lws().spec.leaderWorkerTemplate.restartPolicy).toBe('RecreateGroupOnPodRestart');
  });

  it('the shard link is mutual TLS from one Secret: workers demand the leader\'s certificate, the leader checks theirs', () => {
    const t = lws().spec.leaderWorkerTemplate;
    const worker = container(t.workerTemplate, 'worker');
    const leader = container(t.leaderTemplate, 'leader');
    const envOf = (c: K8sObject) => Object.fromEntries(((c.env ?? []) as K8sObject[]).filter((e) => e.value !== undefined).map((e) => [e.name, String(e.value)]));
    const workerConfig = parseWorkerArgs(worker.args.slice(1), envOf(worker));
    const leaderConfig = loadServeConfig(new Map(), envOf(leader));
    /** Where a file path of a container comes from: the Secret and key mounted there, and the file mode. */
    const source = (template: K8sObject, c: K8sObject, path: string | null) => {
      expect(path, 'a shard-link file is configured').not.toBeNull();
      const mount = (c.volumeMounts as K8sObject[]).find((m) => path!.startsWith(`${m.mountPath}/`));
      expect(mount, `${path} is on a mounted volume`).toBeDefined();
      expect(mount!.readOnly).toBe(true);
      const volume = (template.spec.volumes as K8sObject[]).find((v) => v.name === mount!.name)!;
      expect(volume.secret, `${path} comes from a Secret`).toBeDefined();
      // Readable by the pod's group (fsGroup) and root only: 0440.
      expect(volume.secret.defaultMode).toBe(0o440);
      expect(t.workerTemplate.spec.securityContext.fsGroup).toBe(t.leaderTemplate.spec.securityContext.fsGroup);
      return `${volume.secret.secretName}/${path!.slice(mount!.mountPath.length + 1)}`;
    };
    const w = (p: string | null) => source(t.workerTemplate, worker, p);
    const l = (p: string | null) => source(t.leaderTemplate, leader, p);
    // Mutual TLS: the worker's client CA is the CA the leader trusts; both certificates come from the same Secret.
    expect(w(workerConfig.tlsClientCa)).toBe(l(leaderConfig.workerTlsCa));
    expect(w(workerConfig.tlsCert)).toBe(l(leaderConfig.workerTlsCert));
    expect(w(workerConfig.tlsKey)).toBe(l(leaderConfig.workerTlsKey));
    expect(w(workerConfig.tlsCert)).toBe('tessera-shard-tls/tls.crt');
    // The real validators accept both sides (files stand in for the Secret's keys); a worker on 0.0.0.0 is authenticated.
    const keys = join(scratch, 'shard-tls');
    mkdirSync(keys, { recursive: true });
    for (const k of ['tls.crt', 'tls.key', 'ca.crt']) writeFileSync(join(keys, k), 'PEM');
    const local = (p: string | null) => (p === null ? null : join(keys, p.slice(p.lastIndexOf('/') + 1)));
    expect(workerConfig.listen.startsWith('0.0.0.0:')).toBe(true);
    expect(workerConfig.insecure).toBe(false);
    const warnings: string[] = [];
    const server = shardServerSecurity({ ...workerConfig, tlsCert: local(workerConfig.tlsCert), tlsKey: local(workerConfig.tlsKey), tlsClientCa: local(workerConfig.tlsClientCa) }, (x) => warnings.push(x));
    expect(server.tls?.clientCa).not.toBeNull();
    expect(warnings).toEqual([]);
    const client = shardClientSecurity({ ...leaderConfig, workerTlsCa: local(leaderConfig.workerTlsCa), workerTlsCert: local(leaderConfig.workerTlsCert), workerTlsKey: local(leaderConfig.workerTlsKey) });
    expect(client.tls?.cert).not.toBeNull();
    // The leader dials workers by their LWS names; those are what the certificate's SAN must cover (docs/deploy.md).
    expect(leaderConfig.workerTlsServerName).toBeNull();
  });
});

describe('container images', () => {
  for (const file of ['Dockerfile.cpu', 'Dockerfile.gpu']) {
    it(`${file}: production install, non-root, tini as PID 1 in exec form, sources that exist`, () => {
      const df = parseDockerfile(join(DEPLOY, 'docker', file));
      expect(df.stages.length).toBeGreaterThanOrEqual(2);
      const runtime = df.stages.at(-1)!;
      const deps = df.stages.find((s) => s.name === 'deps')!;
      const install = deps.instructions.find((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.args))!;
      expect(install.args).toContain('--omit=dev');
      // Only the npm registry: onnxruntime-node's download from NuGet stays off in both images; the GPU image adds the
      // CUDA build with `npm run install:cuda`'s script and carries it into the runtime stage.
      expect(stageEnv(deps).ONNXRUNTIME_NODE_INSTALL).toBe('skip');
      if (file === 'Dockerfile.gpu') {
        expect(install.args).toMatch(/\bnpm ci\b[^&]*&& node scripts\/install-cuda\.mjs\b/);
        expect(contextCopies(deps).flatMap((c) => c.sources)).toEqual(expect.arrayContaining(['scripts/install-cuda.mjs', 'deploy/cuda-provider/package.json', 'deploy/cuda-provider/package-lock.json']));
        expect(runtime.instructions.some((i) => i.keyword === 'COPY' && i.args === '--from=deps /app/deploy/cuda-provider ./deploy/cuda-provider')).toBe(true);
      }

      const user = runtime.instructions.filter((i) => i.keyword === 'USER').at(-1)!.args;
      expect(Number(user.split(':')[0])).toBeGreaterThan(0);
      const deployment = find(renders.get('overlays/cpu')!, 'Deployment', 'tessera');
      expect(deployment.spec.template.spec.securityContext.runAsUser).toBe(Number(user.split(':')[0]));

      const entrypoint = execForm(runtime, 'ENTRYPOINT');
      expect(entrypoint, 'ENTRYPOINT in exec form').not.toBeNull();
      expect(entrypoint!.slice(0, 2)).toEqual(['/usr/bin/tini', '--']);
      expect(entrypoint!.slice(2)).toEqual(['node', '/app/bin/tessera.mjs']);
      expect(execForm(runtime, 'CMD')).toEqual(['serve']);
      expect(runtime.instructions.some((i) => i.keyword === 'RUN' && /install[^&]*\btini\b/.test(i.args))).toBe(true);

      const env = stageEnv(runtime);
      const config = loadServeConfig(new Map(), env);
      const exposed = runtime.instructions.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(' ').map(Number));
      expect(exposed).toEqual(expect.arrayContaining([config.port, config.httpPort, config.metricsPort]));
      expect(config.device).toBe(file === 'Dockerfile.gpu' ? 'cuda' : 'cpu');

      for (const stage of df.stages) for (const { sources } of contextCopies(stage)) for (const src of sources) expect(statSync(join(ROOT, src)), `${file}: COPY ${src}`).toBeDefined();
      // What the runtime stage copies is what `tessera serve` needs: its entry point and every folder src imports from.
      const copied = contextCopies(runtime).flatMap((c) => c.sources);
      expect(copied).toEqual(expect.arrayContaining(['bin', 'src', 'kernels', 'proto', 'package.json']));
    });
  }
});
