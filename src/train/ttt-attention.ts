// Training-time-test attention computed in query chunks with its gradient written out (the attention
// counterpart of soft-cross-entropy.ts). Autodiff of the plain form (draft/eagle3.ts tttAttention) keeps
// every step's [B, H, T, T] scores and probabilities for the backward pass: at T = 2048 with 16 heads that
// is 268 MB a tensor, several per TTT step, seven steps, past the wasm heap. Here only q, k and v are kept;
// the backward pass recomputes each chunk's probabilities. Same semantics: queries of step i attend causally
// to step 0's keys and, for each later step j = 1..i, to step j's key at the same position; one softmax.
import * as tf from '@tensorflow/tfjs';
import { matmul } from '../backend/matmul.ts';
import type { StepKV } from '../draft/eagle3.ts';

const swap = (x: tf.Tensor) => tf.transpose(x, [0, 2, 1]); // explicit transposes: wasm's flagged matmul is slow

/**
 * q [B, H, T, hd]; kvs[j].k/.v [B, kvH, T, hd]; causalBias [1, 1, T, T]; `chunkRows` query positions at a
 * time. Returns [B, T, H * hd], as tttAttention does.
 */
export function chunkedTttAttention(q: tf.Tensor4D, kvs: StepKV[], causalBias: tf.Tensor4D, chunkRows: number): tf.Tensor3D {
  const [B, H, T, hd] = q.shape;
  const kvH = kvs[0].k.shape[1];
  const g = H / kvH;
  const G = B * kvH;
  const J = kvs.length - 1; // diagonal steps
  const scale = 1 / Math.sqrt(hd);
  const chunks: [number, number][] = [];
  for (let t = 0; t < T; t += chunkRows) chunks.push([t, Math.min(chunkRows, T - t)]);

  // Per chunk: the queries [G, g, n, hd] and the probabilities over [T causal keys, J diagonal keys].
  const probsOf = (q5: tf.Tensor, k0: tf.Tensor, kd: tf.Tensor[], bias: tf.Tensor, t: number, n: number) => {
    const qc = q5.slice([0, 0, t, 0], [G, g, n, hd]);
    const k0T = swap(k0); // [G, hd, T]
    const causal = tf.add(
      tf.mul(matmul(qc.reshape([G, g * n, hd]), k0T), scale).reshape([G, g, n, T]),
      bias.slice([0, 0, t, 0], [1, 1, n, T]),
    );
    const diag = kd.map((k) => tf.mul(tf.sum(tf.mul(qc, k.slice([0, t, 0], [G, n, hd]).reshape([G, 1, n, hd])), -1, true), scale));
    const probs = tf.softmax(J ? tf.concat([causal, ...diag], -1) : causal); // [G, g, n, T + J]
    return { qc, probs };
  };

  const fused = tf.customGrad(((...args: tf.Tensor[]) => {
    const save = args.pop() as unknown as tf.GradSaveFunc;
    const [qIn, ...kvIn] = args;
    save([qIn, ...kvIn, causalBias]);
    const q5 = qIn.reshape([G, g, T, hd]);
    const k0 = kvIn[0].reshape([G, T, hd]);
    const v0 = kvIn[1].reshape([G, T, hd]);
    const kd = Array.from({ length: J }, (_, j) => kvIn[2 + 2 * j].reshape([G, T, hd]));
    const vd = Array.from({ length: J }, (_, j) => kvIn[3 + 2 * j].reshape([G, T, hd]));
    const outs = chunks.map(([t, n]) =>
      tf.tidy(() => {
        const { probs } = probsOf(q5, k0, kd, causalBias, t, n);
        const parts = J ? tf.split(probs, [T, ...kd.map(() => 1)], -1) : [probs];
        let out = matmul(parts[0].reshape([G, g * n, T]), v0).reshape([G, g, n, hd]);
        vd.forEach((v, j) => {
          out = tf.add(out, tf.mul(parts[j + 1], v.slice([0, t, 0], [G, n, hd]).reshape([G, 1, n, hd])));
        });
        return out;
      }),
    );
    const value = tf.tidy(() => tf.transpose(tf.concat(outs, 2).reshape([B, H, T, hd]), [0, 2, 1, 3]).reshape([B, T, H * hd]));
    tf.dispose([...outs, q5, k0, v0, ...kd, ...vd]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [qs, ...rest] = saved;
        const bias = rest.pop() as tf.Tensor;
        const q5s = qs.reshape([G, g, T, hd]);
        const k0s = rest[0].reshape([G, T, hd]);
        const v0s = rest[1].reshape([G, T, hd]);
        const kds = Array.from({ length: J }, (_, j) => rest[2 + 2 * j].reshape([G, T, hd]));
        const vds = Array.from({ length: J }, (_, j) => rest[3 + 2 * j].reshape([G, T, hd]));
        const dOut = tf.transpose(dy.reshape([B, T, H, hd]), [0, 2, 1, 3]).reshape([G, g, T, hd]);
        const v0T = swap(v0s);
        const dq: tf.Tensor[] = [];
        let dk0 = tf.zeros([G, T, hd]);
        let dv0 = tf.zeros([G, T, hd]);
        const dkd: tf.Tensor[][] = kds.map(() => []); // per diagonal step, its chunks' key and value gradients
        const dvd: tf.Tensor[][] = kds.map(() => []);
        for (const [t, n] of chunks) {
          const r = tf.tidy(() => {
            const { qc, probs } = probsOf(q5s, k0s, kds, bias, t, n);
            const doc = dOut.slice([0, 0, t, 0], [G, g, n, hd]);
            const parts = J ? tf.split(probs, [T, ...kds.map(() => 1)], -1) : [probs];
            // dP: against every value the probabilities weighted.
            const dpCausal = matmul(doc.reshape([G, g * n, hd]), v0T).reshape([G, g, n, T]);
            const dpDiag = vds.map((v) => tf.sum(tf.mul(doc, v.slice([0, t, 0], [G, n, hd]).reshape([G, 1, n, hd])), -1, true));
            const dp = J ? tf.concat([dpCausal, ...dpDiag], -1) : dpCausal;
            // Softmax backward: dS = P * (dP - sum(dP * P)), then the 1/sqrt(hd) of the scores.
            const ds = tf.mul(tf.mul(probs, tf.sub(dp, tf.sum(tf.mul(dp, probs), -1, true))), scale);
            const dsParts = J ? tf.split(ds, [T, ...kds.map(() => 1)], -1) : [ds];
            const dsC = dsParts[0].reshape([G, g * n, T]);
            let dqc = matmul(dsC, k0s).reshape([G, g, n, hd]);
            const dkdc: tf.Tensor[] = [];
            const dvdc: tf.Tensor[] = [];
            kds.forEach((k, j) => {
              const kc = k.slice([0, t, 0], [G, n, hd]).reshape([G, 1, n, hd]);
              dqc = tf.add(dqc, tf.mul(dsParts[j + 1], kc));
              dkdc.push(tf.sum(tf.mul(dsParts[j + 1], qc), 1)); // [G, n, hd], summed over the group
              dvdc.push(tf.sum(tf.mul(parts[j + 1], doc), 1));
            });
            const dk0c = matmul(swap(dsC), qc.reshape([G, g * n, hd])); // [G, T, hd]
            const dv0c = matmul(swap(parts[0].reshape([G, g * n, T])), doc.reshape([G, g * n, hd]));
            return { dqc, dk0: tf.add(dk0, dk0c), dv0: tf.add(dv0, dv0c), dkdc, dvdc };
          });
          dq.push(r.dqc);
          tf.dispose([dk0, dv0]);
          dk0 = r.dk0;
          dv0 = r.dv0;
          r.dkdc.forEach((x, j) => dkd[j].push(x));
          r.dvdc.forEach((x, j) => dvd[j].push(x));
        }
        const shapeKV = [B, kvH, T, hd];
        const grads = tf.tidy(() => [
          tf.concat(dq, 2).reshape([B, H, T, hd]),
          dk0.reshape(shapeKV),
          dv0.reshape(shapeKV),
          ...kds.flatMap((_, j) => [tf.concat(dkd[j], 1).reshape(shapeKV), tf.concat(dvd[j], 1).reshape(shapeKV)]),
        ]);
        tf.dispose([...dq, dk0, dv0, ...dkd.flat(), ...dvd.flat(), dOut, v0T, q5s, k0s, v0s, ...kds, ...vds]);
        return grads;
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as (...xs: tf.Tensor[]) => tf.Tensor;

  return fused(q, ...kvs.flatMap(({ k, v }) => [k, v])) as tf.Tensor3D;
}
