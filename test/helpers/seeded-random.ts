import { SeededRandom } from '../../src/util/seeded-random.ts';

/** Uniform numbers in (0, 1) for tests, from the project's one seeded generator (same sequence for the same seed). */
export function seededRandom(seed: number): () => number {
  const stream = new SeededRandom(seed, 'test');
  return () => stream.nextUniform();
}
