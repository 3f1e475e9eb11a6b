/**
 * Reads the profile ONNX Runtime writes for a session created with `enableProfiling` (written when the session is
 * released, as `<profileFilePrefix>_<date>.json`): a JSON array of trace events, among them one `model_run` event
 * (cat "Session") per session.run and one `<node name>_kernel_time` event (cat "Node", args.op_name = the op type)
 * per node executed. Times are microseconds.
 *
 * Each node event is assigned to the run whose [ts, ts + dur] holds it, so the caller can keep the runs it timed
 * (dropping warm-up and set-up runs) and aggregate their nodes by op type or by node role (the node name with its
 * layer index folded, e.g. `node_l{N}_attn_scores`).
 */
import fs from 'node:fs';
import path from 'node:path';

export interface ProfiledNode {
  name: string;
  opType: string;
  /** Start, on the profile's clock (us). */
  startUs: number;
  durationUs: number;
}

export interface ProfiledRun {
  /** model_run: the run inside ORT, from entry to exit of InferenceSession::Run. */
  startUs: number;
  durationUs: number;
  /** In the order they ran. */
  nodes: ProfiledNode[];
}

interface TraceEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: { op_name?: string };
}

const KERNEL_SUFFIX = '_kernel_time';

/** The runs of one profile file, in the order they ran. */
export function parseOrtProfile(events: unknown): ProfiledRun[] {
  if (!Array.isArray(events)) throw new Error('an ORT profile is a JSON array of trace events');
  const list = events as TraceEvent[];
  const runs = list
    .filter((e) => e.cat === 'Session' && e.name === 'model_run' && typeof e.ts === 'number' && typeof e.dur === 'number')
    .sort((a, b) => a.ts! - b.ts!)
    .map((e) => ({ start: e.ts!, end: e.ts! + e.dur!, run: { startUs: e.ts!, durationUs: e.dur!, nodes: [] as ProfiledNode[] } }));
  const starts = runs.map((r) => r.start);
  for (const e of list) {
    if (e.cat !== 'Node' || typeof e.name !== 'string' || !e.name.endsWith(KERNEL_SUFFIX) || typeof e.ts !== 'number') continue;
    // The last run starting at or before the node.
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= e.ts) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0 || e.ts > runs[found].end) continue; // outside every run (none expected)
    runs[found].run.nodes.push({ name: e.name.slice(0, -KERNEL_SUFFIX.length), opType: e.args?.op_name ?? 'unknown', startUs: e.ts, durationUs: e.dur ?? 0 });
  }
  for (const r of runs) r.run.nodes.sort((a, b) => a.startUs - b.startUs);
  return runs.map((r) => r.run);
}

/**
 * Reads and parses the profile files ORT wrote for `prefix` (the sessions' profileFilePrefix): one list of runs per
 * session that ran (a runner with a LoRA graph has two sessions, so up to two files).
 */
export function readOrtProfiles(prefix: string): ProfiledRun[][] {
  const dir = path.dirname(prefix);
  const base = path.basename(prefix);
  const files = fs.readdirSync(dir).filter((f) => f.startsWith(`${base}_`) && f.endsWith('.json')).sort();
  if (files.length === 0) throw new Error(`no ORT profile ${prefix}_*.json`);
  return files.map((f) => parseOrtProfile(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')))).filter((runs) => runs.length > 0);
}


export interface OpCost {
  /** Op type, or node role. */
  key: string;
  /** The key's kernel time in a run: the sum of its nodes' times, each the statistic over runs; milliseconds. */
  msPerRun: number;
  /** Nodes per run. */
  nodesPerRun: number;
}

export interface RunsBreakdown {
  runs: number;
  /** model_run (the statistic over runs), ms. */
  runMs: number;
  /** Sum of all nodes' kernel times (each less the floor, the statistic over runs), ms. */
  nodesMs: number;
  /**
   * Time inside model_run but outside every kernel: before the first node, between nodes, after the last (each gap,
   * named by the node after it, the statistic over runs), ms. ORT's executor and allocations, plus the profiler's own
   * bookkeeping between nodes: an upper bound on what the executor costs without the profiler.
   */
  betweenMs: number;
  nodesPerRun: number;
  /** Most expensive first. */
  costs: OpCost[];
}

/** The node name with layer indices folded: node_l12_attn_scores -> node_l{N}_attn_scores, model.layers.3.mlp -> model.layers.{N}.mlp. */
export function nodeRole(name: string): string {
  return name.replace(/(^|[_./])l\d+(?=[_./]|$)/g, '$1l{N}').replace(/(^|[_./])layers([._])\d+(?=[_./]|$)/g, '$1layers$2{N}');
}

function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Cost per run of the nodes of `runs`, grouped by `keyOf` (op type by default). Each node (by name: the same node in
 * every run) is reduced over the runs by `statistic` first, then nodes are summed per key, so a run in which another
 * process took the CPU for a moment moves only the nodes it hit, and only if it hit them in most runs (median, the
 * default) or in every run (minimum, the robust choice on a loaded machine). `floorUs` is taken off every node's time
 * (not below 0): the profiler's own cost per node, which its kernel times include.
 */
export function breakdown(
  runs: readonly ProfiledRun[],
  keyOf: (n: ProfiledNode) => string = (n) => n.opType,
  floorUs = 0,
  statistic: (values: number[]) => number = medianOf,
): RunsBreakdown {
  if (runs.length === 0) throw new Error('no profiled runs to break down');
  // node name -> its time in each run (0 in a run that did not execute it)
  const byNode = new Map<string, { node: ProfiledNode; us: number[]; count: number }>();
  runs.forEach((r, i) => {
    for (const n of r.nodes) {
      let entry = byNode.get(n.name);
      if (!entry) byNode.set(n.name, (entry = { node: n, us: new Array<number>(runs.length).fill(0), count: 0 }));
      entry.us[i] += Math.max(0, n.durationUs - floorUs);
      entry.count++;
    }
  });
  const sums = new Map<string, { us: number; count: number }>();
  let nodesUs = 0;
  for (const { node, us, count } of byNode.values()) {
    const k = keyOf(node);
    const s = sums.get(k) ?? { us: 0, count: 0 };
    const cost = statistic(us);
    s.us += cost;
    s.count += count;
    sums.set(k, s);
    nodesUs += cost;
  }
  const costs = [...sums.entries()]
    .map(([key, s]) => ({ key, msPerRun: s.us / 1000, nodesPerRun: s.count / runs.length }))
    .sort((a, b) => b.msPerRun - a.msPerRun);
  // gap before each node (and after the last), keyed by the node it precedes: the same gap in every run
  const gaps = new Map<string, number[]>();
  runs.forEach((r, i) => {
    let end = r.startUs;
    const add = (key: string, us: number) => {
      let list = gaps.get(key);
      if (!list) gaps.set(key, (list = new Array<number>(runs.length).fill(0)));
      list[i] += Math.max(0, us);
    };
    for (const n of r.nodes) {
      add(n.name, n.startUs - end);
      end = Math.max(end, n.startUs + n.durationUs);
    }
    add('<end of run>', r.startUs + r.durationUs - end);
  });
  let betweenUs = 0;
  for (const list of gaps.values()) betweenUs += statistic(list);
  return {
    runs: runs.length,
    runMs: statistic(runs.map((r) => r.durationUs)) / 1000,
    nodesMs: nodesUs / 1000,
    betweenMs: betweenUs / 1000,
    nodesPerRun: runs.reduce((a, r) => a + r.nodes.length, 0) / runs.length,
    costs,
  };
}
