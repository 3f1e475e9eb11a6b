import { writeFileSync } from 'node:fs';
import { configMarkdown } from '../src/cli/config.ts';

writeFileSync(new URL('../docs/config.md', import.meta.url), configMarkdown());
