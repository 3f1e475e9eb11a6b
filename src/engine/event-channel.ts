/**
 * Single-consumer async queue of one request's events: the step loop pushes, the caller iterates. Ending the
 * iteration early (break / return()) calls `onCancel`, so a caller that stops reading frees the sequence.
 */
export interface EventChannel<T> {
  push(value: T): void;
  /** No more values: the iteration completes once the buffered ones are read. */
  close(): void;
  readonly iterable: AsyncIterable<T>;
}

export function createEventChannel<T>(onCancel: () => void): EventChannel<T> {
  const buffered: T[] = [];
  let closed = false;
  let iterated = false;
  let wake: (() => void) | null = null;

  const notify = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };

  async function* iterate(): AsyncGenerator<T> {
    let completed = false;
    try {
      for (;;) {
        while (buffered.length > 0) yield buffered.shift()!;
        if (closed) {
          completed = true;
          return;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      if (!completed) onCancel();
    }
  }

  return {
    push(value: T): void {
      if (closed) return;
      buffered.push(value);
      notify();
    },
    close(): void {
      closed = true;
      notify();
    },
    iterable: {
      [Symbol.asyncIterator](): AsyncIterator<T> {
        if (iterated) throw new TypeError('a generation stream can be iterated once');
        iterated = true;
        return iterate();
      },
    },
  };
}
