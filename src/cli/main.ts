// specforge: the command line. One file per command; this one only wires them together.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { captureCommand } from './capture.ts';
import { evalCommand } from './eval.ts';
import { exportOnnxCommand } from './export-onnx.ts';
import { inspectCommand } from './inspect.ts';
import { trainCommand } from './train.ts';

try {
  await yargs(hideBin(process.argv))
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
