import tseslint from 'typescript-eslint';

const layer = (from, forbidden) => ({
  files: [`src/${from}/**/*.ts`],
  rules: {
    'no-restricted-imports': ['error', { patterns: forbidden.map((group) => ({ group: [group], message: `src/${from} must not import ${group}` })) }],
  },
});

export default tseslint.config(
  { ignores: ['node_modules/**', 'src/gen/**', 'bench/results/**', 'dist/**', '.cache/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  layer('engine', ['**/model/**', '**/parallel/**', '**/server/**', '@grpc/*', 'onnxruntime-node', 'onnxruntime-common']),
  layer('model', ['**/server/**', '**/engine/engine*', '**/parallel/**', '@grpc/*']),
  layer('adapters', ['**/server/**', '@grpc/*']),
  layer('parallel', ['**/server/**']),
  layer('server', ['**/model/**', '**/parallel/**', 'onnxruntime-node']),
  layer('telemetry', ['../*']),
);
