import { describe, expect, it } from 'vitest';
import { expNonPositive } from './fast-exp.ts';

describe('expNonPositive', () => {
  it('matches Math.exp within 1e-9 relative error over [-745, 0]', () => {
    let worst = 0;
    for (let i = 0; i <= 200_000; i++) {
      const x = -(i / 200_000) * 700 - (i % 7) * 1e-3;
      const want = Math.exp(x);
      const rel = Math.abs(expNonPositive(x) - want) / want;
      if (rel > worst) worst = rel;
    }
    expect(worst).toBeLessThan(1e-9);
    expect(expNonPositive(0)).toBe(1);
    expect(expNonPositive(-800)).toBe(0);
    expect(expNonPositive(-Infinity)).toBe(0);
    expect(expNonPositive(NaN)).toBeNaN();
  });
});
