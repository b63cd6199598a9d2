import { WORKER_SEMI_SPACE_MIB, workerExecArgv } from '../../src/cluster/index.ts';

const flag = `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`;

test('the workers get the primary\'s flags and the young generation\'s size', () => {
  expect(workerExecArgv(['--enable-source-maps'])).toEqual(['--enable-source-maps', flag]);
  expect(workerExecArgv([])).toEqual([flag]);
});

test('a size given to node wins, on its command line or in NODE_OPTIONS, in either spelling', () => {
  expect(workerExecArgv(['--max-semi-space-size=64'])).toEqual(['--max-semi-space-size=64']);
  expect(workerExecArgv(['--max_semi_space_size=2'])).toEqual(['--max_semi_space_size=2']);
  expect(workerExecArgv(['--max-semi-space-size', '8'])).toEqual(['--max-semi-space-size', '8']);
  expect(workerExecArgv([], '--max-old-space-size=512 --max-semi-space-size=32')).toEqual([]);
  // a different flag that merely starts alike is not the size
  expect(workerExecArgv([], '--max-semi-space-sizes')).toEqual([flag]);
});
