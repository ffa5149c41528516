// specforge: the command line. One file per command; this one only wires them together, and joins the MPI
// world first when mpirun or srun started it (src/parallel/mpi.ts).
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { joinMpiWorld } from '../parallel/mpi.ts';
import { captureCommand } from './capture.ts';
import { evalCommand } from './eval.ts';
import { exportOnnxCommand } from './export-onnx.ts';
import { inspectCommand } from './inspect.ts';
import { trainCommand } from './train.ts';

try {
  const argv = hideBin(process.argv);
  // Before anything loads a backend: MPI_Init and this process's GPU.
  const mpi = joinMpiWorld();
  if (mpi && mpi.size > 1) {
    if (!['train', 'capture'].includes(argv[0]))
      throw new Error(
        `${argv[0] ?? 'a command'} runs in one process: under mpirun or srun, train and capture run on several (this job has ${mpi.size})`,
      );
    if (mpi.rank !== 0) console.log = () => {}; // rank 0 speaks for the job; every rank reports its own error
  }
  await yargs(argv)
    .scriptName('specforge')
    .usage('$0 <command> [options]\n\nTrain EAGLE-3 draft models (with SpecExit exit signals) for speculative decoding.')
    .command(captureCommand)
    .command(trainCommand)
    .command(evalCommand)
    .command(exportOnnxCommand)
    .command(inspectCommand as never)
    .demandCommand(1, 'Name a command.')
    .strict()
    .fail((msg, err, y) => {
      if (err) throw err; // reported below
      y.showHelp();
      console.error(`\n${msg}`);
      process.exit(1);
    })
    .help()
    .parseAsync();
} catch (e) {
  // Errors of bad input already name the file or field: print them plainly (stack with SPECFORGE_DEBUG=1).
  console.error(`specforge: ${process.env.SPECFORGE_DEBUG ? (e as Error).stack : (e as Error).message}`);
  process.exit(1);
}
