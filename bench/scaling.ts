// How much a second rank adds on this machine, kernel by kernel: every rank does the same fixed work at
// once, so aggregate throughput with N ranks relative to one is N * t(1) / t(N). Bounds what data-parallel
// training can gain here (two vCPUs that share a physical core scale far below 2x).
// Usage: npm run bench:scaling [-- --runs 3]
import { launchRanks } from '../src/parallel/launch.ts';
import type { ScalingResult } from './scaling-rank.ts';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1]) || 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const module = new URL('./scaling-rank.ts', import.meta.url).href;

const times = new Map<string, Map<number, number[]>>();
for (let run = 0; run < runs; run++) {
  for (const ranks of [1, 2]) {
    const res = (await launchRanks({ module, worldSize: ranks, payload: null })) as ScalingResult;
    for (const [kernel, s] of Object.entries(res.seconds)) {
      const byRanks = times.get(kernel) ?? new Map<number, number[]>();
      byRanks.set(ranks, [...(byRanks.get(ranks) ?? []), s]);
      times.set(kernel, byRanks);
    }
  }
}
console.log(`aggregate speed of 2 ranks relative to 1 (median of ${runs} runs; rank 0's time)`);
for (const [kernel, byRanks] of times) {
  const one = median(byRanks.get(1)!);
  const two = median(byRanks.get(2)!);
  console.log(`${kernel.padEnd(50)} 1 rank ${one.toFixed(2)} s, 2 ranks ${two.toFixed(2)} s each: ${((2 * one) / two).toFixed(2)}x`);
}
