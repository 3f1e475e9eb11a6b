/** Renders result tables: aligned plain text for the console, GitHub Markdown for docs. */
import type { Cell, ResultTable } from './bench-case.ts';

function cellText(cell: Cell): string {
  if (cell === null) return '-';
  return typeof cell === 'number' ? String(cell) : cell;
}

export function formatTextTable(table: ResultTable): string {
  const cells = [table.columns, ...table.rows.map((row) => row.map(cellText))];
  const widths = table.columns.map((_, c) => Math.max(...cells.map((row) => (row[c] ?? '').length)));
  const numeric = table.columns.map((_, c) => table.rows.length > 0 && table.rows.every((row) => typeof row[c] === 'number' || row[c] === null));
  const line = (row: string[]) => row.map((text, c) => (numeric[c] ? text.padStart(widths[c]) : text.padEnd(widths[c]))).join('  ').trimEnd();
  const out = [table.title, line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)];
  for (const note of table.notes ?? []) out.push(`  ${note}`);
  return out.join('\n');
}

export function formatMarkdownTable(table: Pick<ResultTable, 'columns' | 'rows'>): string {
  const escape = (text: string) => text.replace(/\|/g, '\\|');
  const numeric = table.columns.map((_, c) => table.rows.length > 0 && table.rows.every((row) => typeof row[c] === 'number' || row[c] === null));
  const out = [
    `| ${table.columns.map(escape).join(' | ')} |`,
    `| ${numeric.map((n) => (n ? '---:' : '---')).join(' | ')} |`,
    ...table.rows.map((row) => `| ${row.map((cell) => escape(cellText(cell))).join(' | ')} |`),
  ];
  return out.join('\n');
}
