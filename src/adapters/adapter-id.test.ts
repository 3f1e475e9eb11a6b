import { describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.ts';
import { MAX_ADAPTER_ID_LENGTH, parseAdapterId } from './adapter-id.ts';

function refusal(given: string, maxLength?: number): TesseraError {
  try {
    parseAdapterId(given, { field: 'adapter_id', ...(maxLength !== undefined ? { maxLength } : {}) });
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    return err as TesseraError;
  }
  throw new Error(`${JSON.stringify(given)} was accepted`);
}

describe('adapter id rule (shared by the server and the registry)', () => {
  it.each(['a', 'support-v2', 'acme/support-v2', 'Qwen2.5-lora_r8', 'org.name/model.v1', '0/0', 'a'.repeat(MAX_ADAPTER_ID_LENGTH), `${'o'.repeat(63)}/${'n'.repeat(64)}`])(
    'accepts %j unchanged',
    (id) => {
      expect(parseAdapterId(id, { field: 'adapter_id' })).toBe(id);
    },
  );

  it.each(['/x', 'a/', 'a//b', 'a/b/c', '.hidden', '-x', '_x', 'a/.b', '../x', './x', 'a b', 'a\\b', 'é', 'a\u0000', 'a/b ', ' a'])(
    'refuses %j naming the field, the rule and the value',
    (id) => {
      const err = refusal(id);
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.message).toBe(`\`adapter_id\` must be \`name\` or \`org/name\`, each part a letter or digit followed by letters, digits, ".", "_" or "-". Given: ${JSON.stringify(id)}`);
    },
  );

  it('refuses the empty id', () => {
    expect(refusal('').message).toBe('`adapter_id` must be a non-empty adapter id. Given: ""');
  });

  it('refuses ids over the length bound, naming the bound and the length given', () => {
    const long = 'a'.repeat(MAX_ADAPTER_ID_LENGTH + 1);
    expect(refusal(long).message).toBe(`\`adapter_id\` must be at most ${MAX_ADAPTER_ID_LENGTH} characters. Given: "aaaaaaaaaaaaaaaa... (${MAX_ADAPTER_ID_LENGTH + 1} characters)"`);
    expect(refusal('acme/v2', 6).message).toContain('at most 6 characters');
    expect(parseAdapterId('acme/v2', { field: 'adapter_id', maxLength: 7 })).toBe('acme/v2');
    // a caller cannot raise the bound past the registry's
    expect(refusal(long, 10_000).message).toContain(`at most ${MAX_ADAPTER_ID_LENGTH} characters`);
  });

  it('names the field the caller spells', () => {
    expect(() => parseAdapterId('a/b/c', { field: 'adapterId' })).toThrow(/^`adapterId` must be/);
  });
});
